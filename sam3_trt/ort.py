"""ONNX Runtime CPU sessions for checks (parity, FP16 estimate, calibration): one place for their options."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .specs import ALL_SPECS


def ort_session(
    path: str | os.PathLike[str], threads: int | None = None, optimize: bool = True, qdq_as_float: bool = False
) -> Any:
    """ONNX Runtime CPU session without a memory arena.

    Args:
        path: ``.onnx`` file (external data beside it).
        threads: Intra-op threads; ``None`` lets ONNX Runtime choose.
        optimize: All graph optimisations (as users run it); ``False`` runs the graph exactly as written
            (the FP16 estimate's round-trip casts must not be folded away).
        qdq_as_float: Keep Q/DQ pairs as written (quantize, dequantize, compute in float) instead of fusing
            them into ONNX Runtime's int8 kernels. Those kernels saturate their u8s8 products on CPUs
            without VNNI (AVX2 only: relative L2 0.15 against 0.016 on the tiny vision graph): accuracy
            checks measure the graph's quantization error, as TensorRT computes it, not the CPU's kernels.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # no arena: checks run each graph a few times and must not hold the ViT's peak buffers afterwards
    opts.enable_cpu_mem_arena = False
    if qdq_as_float:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_graph(session: Any, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph``'s session on the spec's inputs (extra feeds ignored); outputs by spec name."""
    spec = ALL_SPECS[graph]
    outs = session.run(spec.output_names, {n: feeds[n] for n in spec.input_names})
    return dict(zip(spec.output_names, outs, strict=True))


@contextlib.contextmanager
def session_for_model(model: Any, source: str | os.PathLike[str], optimize: bool = False) -> Iterator[Any]:
    """Session of an edited copy of ``source`` (``model``) that still reads ``source``'s external data.

    ONNX Runtime refuses external data outside the model's folder (symlinks included), so the data
    file is hard-linked into a temporary folder beside ``source`` (copied when linking fails); the
    folder is removed once the session holds the weights.

    Args:
        model: Edited ``onnx.ModelProto`` whose initializers still point at ``source``'s data file.
        source: The original ``.onnx`` file.
        optimize: ONNX Runtime graph optimisations (off by default: edits such as FP16 round-trips
            must run as written).
    """
    import onnx

    source = Path(source)
    try:
        tmp = tempfile.mkdtemp(prefix=".sam3trt-edit-", dir=source.parent)
    except OSError:
        tmp = tempfile.mkdtemp(prefix="sam3trt-edit-")
    try:
        for data in source.parent.glob(source.name + ".data"):
            try:
                os.link(data, Path(tmp) / data.name)
            except OSError:
                shutil.copyfile(data, Path(tmp) / data.name)
        path = Path(tmp) / source.name
        onnx.save(model, str(path))
        session = ort_session(path, optimize=optimize)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    yield session
