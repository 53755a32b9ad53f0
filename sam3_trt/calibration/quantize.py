"""Explicit quantization (Q/DQ) of the vision encoder with ONNX Runtime's static quantizer.

TensorRT 10/11 dropped implicit INT8 calibrators: precision comes from ``QuantizeLinear`` /
``DequantizeLinear`` pairs in the graph. The quantizer (``onnxruntime.quantization.quantize_static``,
QDQ format) calibrates activation ranges on the calibration set's images, quantizes the inputs of
``Conv``/``MatMul``/``ConvTranspose`` nodes (per-channel symmetric weights, symmetric activations, as
TensorRT requires) and leaves biases FP32 (an int32 bias breaks TensorRT's parser). Nodes whose scope
matches an exclusion pattern stay unquantized.

INT8 activation ranges (min/max) come from this package's streamed statistics (:mod:`.stats`), handed
to the quantizer as its calibration cache: ONNX Runtime's own MinMax calibrator holds the augmented
full-size vision graph's run at once and was killed for memory at 24 GB here, while the streamed pass
exposes the calibrated tensors a chunk at a time. FP8 needs the quantizer's Distribution calibrator
(histograms), which still runs inside ONNX Runtime's quantizer (fine for the tiny variant).

ModelOpt's ONNX quantizer is NVIDIA's tool for this, but its ``[onnx]`` extra pins onnx 1.21 and pulls
onnxruntime-gpu and cupy; ONNX Runtime's quantizer runs on this CPU-only project's pinned stack.

``int8`` graphs run in ONNX Runtime CPU, so their accuracy is measured here against FP32 on the
calibration set (per output, and end to end as mask IoU of the top queries). ``fp8`` (E4M3) graphs do
not run in ONNX Runtime CPU: their accuracy needs a GPU (TensorRT for RTX builds them for SM89/SM120).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..specs import SPECS

QUANT_OPS = ("Conv", "MatMul", "ConvTranspose")


def excluded_nodes(model: Any, patterns: Sequence[str]) -> list[str]:
    """Names of nodes whose scope (module path) or name matches any of ``patterns``."""
    from ..engines.precision import node_scope

    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as exc:
            raise Sam3TrtError(f"--exclude {p!r} is not a valid regular expression: {exc}") from None
    return [n.name for n in model.graph.node if any(rx.search(node_scope(n)) or rx.search(n.name) for rx in compiled)]


def activation_matmuls(model: Any) -> list[str]:
    """``MatMul`` nodes with no weight input (attention's ``q @ k^T`` and ``p @ v``).

    Left unquantized by default: they carry no weights to compress, their inputs (scores up to 5184 x
    5184 per head) cost most of the calibration time and memory, and kept float they stay one fused
    attention kernel on the CPU (:mod:`sam3_trt.runtime.ort_attention`), as ModelOpt's
    ``disable_mha_qdq`` leaves them.
    """
    weights = {i.name for i in model.graph.initializer}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and not any(i in weights or i in constants for i in n.input)
    ]


def calibration_tensors(model: Any, skip: Collection[str] = ()) -> list[str]:
    """Float activations the quantizer calibrates: inputs and outputs of ``QUANT_OPS`` nodes (ONNX Runtime's rule).

    Args:
        model: The FP32 graph (external data not needed).
        skip: Names of nodes left unquantized (their tensors are not needed).
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.output, *inferred.input)}
    weights = {i.name for i in model.graph.initializer}
    out: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type in QUANT_OPS and node.name not in skip:
            for name in (*node.input, *node.output):
                if name and name not in weights and types.get(name) == onnx.TensorProto.FLOAT:
                    out[name] = None
    return list(out)


def write_range_cache(stats: Mapping[str, Any], names: Sequence[str], path: Path) -> None:
    """ONNX Runtime calibration cache (MinMax) at ``path`` from streamed statistics of ``names``.

    Raises:
        Sam3TrtError: A tensor has no statistics or no finite range.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    data = {}
    for name in names:
        st = stats.get(name)
        if st is None or not st.count:
            raise Sam3TrtError(f"no activation statistics for tensor {name!r}: the calibration pass did not reach it")
        if not (np.isfinite(st.min) and np.isfinite(st.max)) or st.nonfinite:
            raise Sam3TrtError(
                f"tensor {name!r} has a non-finite value on the calibration set (min {st.min}, max {st.max}); "
                "fix the model or exclude its nodes with --exclude"
            )
        data[name] = TensorData(lowest=np.float32(st.min), highest=np.float32(st.max))
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


class _Reader:
    """ONNX Runtime calibration data reader over prepared ``pixel_values`` arrays."""

    def __init__(self, pixels: Sequence[np.ndarray]) -> None:
        self._iter: Iterator[np.ndarray] = iter(pixels)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._iter, None)
        return None if x is None else {"pixel_values": x}


def quantize_vision(
    src: Path,
    dst: Path,
    pixels: Sequence[np.ndarray],
    mode: str = "int8",
    exclude: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    chunk_bytes: int = 4 << 30,
    quantize_attention: bool = False,
) -> dict[str, Any]:
    """Write ``dst``: the FP32 vision graph ``src`` with Q/DQ nodes calibrated on ``pixels``.

    Args:
        src: FP32 ``vision_encoder.onnx``.
        dst: Output ``.onnx`` (external data beside it); ``int8`` also writes the activation ranges
            used, as ONNX Runtime's calibration cache ``<dst stem>.ranges.json``.
        pixels: Preprocessed images (``1x3x1008x1008``), the calibration set.
        mode: ``int8`` or ``fp8``.
        exclude: Scope regexes of nodes to leave unquantized.
        progress: Called with one line per step.
        chunk_bytes: ``int8``: tensor bytes exposed per statistics pass (bounds memory).
        quantize_attention: Also quantize activation x activation ``MatMul`` nodes (attention);
            by default they stay float (:func:`activation_matmuls`).

    Returns:
        What was done: quantized node count, exclusions, settings.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    say = progress or (lambda _m: None)
    types = {"int8": QuantType.QInt8, "fp8": QuantType.QFLOAT8E4M3FN}
    if mode not in types:
        raise Sam3TrtError(f"--mode {mode}: quantization modes are {sorted(types)}")
    model = onnx.load(str(src), load_external_data=False)
    by_pattern = excluded_nodes(model, exclude)
    attention = [] if quantize_attention else activation_matmuls(model)
    skip = list(dict.fromkeys([*by_pattern, *attention]))
    candidates = [n.name for n in model.graph.node if n.op_type in QUANT_OPS and n.name not in skip]
    say(
        f"quantize: {mode} Q/DQ on {len(candidates)} Conv/MatMul/ConvTranspose nodes "
        f"({len(by_pattern)} excluded by --exclude, {len(attention)} attention MatMuls kept float)"
    )
    cache = None
    if mode == "int8":
        from .stats import collect_stats

        names = calibration_tensors(model, set(skip))
        say(f"quantize: activation ranges of {len(names)} tensors over {len(pixels)} images (streamed)")
        stats = collect_stats(
            src, [{"pixel_values": x} for x in pixels], ["pixel_values"], chunk_bytes, say, tensors=names
        )
        cache = dst.with_name(dst.name.removesuffix(".onnx") + ".ranges.json")
        write_range_cache(stats, names, cache)
    quantize_static(
        str(src),
        str(dst),
        None if cache else _Reader(pixels),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANT_OPS),
        per_channel=True,
        activation_type=types[mode],
        weight_type=types[mode],
        nodes_to_exclude=skip,
        use_external_data_format=True,
        # ONNX Runtime calibrates float8 only from activation distributions
        calibrate_method=CalibrationMethod.MinMax if mode == "int8" else CalibrationMethod.Distribution,
        calibration_cache_path=cache,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    out = onnx.load(str(dst), load_external_data=False)
    qdq = sum(n.op_type == "QuantizeLinear" for n in out.graph.node)
    if not qdq:
        raise Sam3TrtError(f"quantization of {src} inserted no QuantizeLinear nodes; check --exclude")
    return {
        "mode": mode,
        "tool": _tool(),
        "quantized_op_types": list(QUANT_OPS),
        "candidate_nodes": len(candidates),
        "quantize_linear_nodes": qdq,
        "excluded_nodes": by_pattern,
        "attention_matmuls_kept_float": len(attention),
        "settings": (
            "QDQ, per-channel symmetric weights, symmetric activations, "
            f"{'MinMax (streamed statistics)' if mode == 'int8' else 'Distribution'} calibration, FP32 bias"
        ),
        "ranges_file": cache.name if cache else None,
    }


def _tool() -> str:
    from importlib import metadata

    return f"onnxruntime.quantization {metadata.version('onnxruntime')}"


def top_query_agreement(
    reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], prompt: int, top: int
) -> tuple[list[float], float]:
    """How far ``other``'s decoder outputs are from ``reference``'s on the ``top`` queries of one prompt.

    The queries are ``reference``'s best by score; both masks are cut at logit 0.

    Args:
        reference: Decoder outputs (``pred_logits`` ``[P,Q]``, ``pred_masks`` ``[P,Q,H,W]``) taken as truth.
        other: The same outputs from the graph under test.
        prompt: Prompt index ``p``.
        top: Queries compared.

    Returns:
        Each query's mask IoU (1 when both masks are empty) and the largest score (sigmoid) difference.
    """
    order = np.argsort(-reference["pred_logits"][prompt])[:top]
    a = reference["pred_masks"][prompt, order] > 0
    b = other["pred_masks"][prompt, order] > 0
    union = (a | b).reshape(len(order), -1).sum(1)
    inter = (a & b).reshape(len(order), -1).sum(1)
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)

    def sig(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x))

    err = np.abs(sig(reference["pred_logits"][prompt, order]) - sig(other["pred_logits"][prompt, order])).max()
    return ious.tolist(), float(err)


def accuracy_report(
    fp32_dir: Path,
    quant_dir: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    top: int = 10,
) -> dict[str, Any]:
    """Quantized vision graph against FP32 on the calibration set: per output, and end to end.

    End to end: both vision outputs go through the same FP32 text encoder and decoder; for the
    ``top`` queries by FP32 score per prompt, the IoU of the masks (logit > 0) and the score error.

    Args:
        fp32_dir: FP32 export folder.
        quant_dir: Folder with the quantized ``vision_encoder.onnx`` (the other graphs as in FP32).
        feeds: Calibration inputs per image (:func:`~sam3_trt.calibration.dataset.graph_feeds`).
        top: Queries compared per prompt.
    """
    from ..compare import metrics
    from ..ort import ort_session, run_graph
    from ..runtime.backends import OnnxRuntimeBackend

    sessions = {
        "fp32": ort_session(fp32_dir / SPECS["vision_encoder"].onnx_file),
        "quant": ort_session(quant_dir / SPECS["vision_encoder"].onnx_file, qdq_as_float=True),
    }
    # the FP32 text encoder and decoder, both sides alike, with attention fused as the CPU backend runs them:
    # unfused, the decoder's 5184-token attention over all prompts peaks at ~9 GB even on the tiny model
    fp32 = OnnxRuntimeBackend(fp32_dir, memory_arena=False)
    text = fp32.session("text_encoder")
    decoder = fp32.session("decoder")
    per_output: dict[str, list[tuple[float, float]]] = {}
    ious, score_err = [], []
    for feed in feeds:
        vis = {k: run_graph(s, "vision_encoder", feed) for k, s in sessions.items()}
        for name in vis["fp32"]:
            _, rel, cos = metrics(vis["fp32"][name], vis["quant"][name])
            per_output.setdefault(name, []).append((rel, cos))
        txt = run_graph(text, "text_encoder", feed)
        dec = {k: run_graph(decoder, "decoder", {**feed, **txt, **v}) for k, v in vis.items()}
        for p in range(dec["fp32"]["pred_logits"].shape[0]):
            got_ious, err = top_query_agreement(dec["fp32"], dec["quant"], p, top)
            ious.extend(got_ious)
            score_err.append(err)
    return {
        "images": len(feeds),
        "vision_outputs": {
            n: {"rel_l2_max": max(r for r, _ in v), "cosine_min": min(c for _, c in v)} for n, v in per_output.items()
        },
        "end_to_end": {
            "queries_compared": len(ious),
            "mask_iou_mean": float(np.mean(ious)),
            "mask_iou_min": float(np.min(ious)),
            "score_max_abs": max(score_err),
        },
        "note": "random weights: shows the mechanism and its cost on this model, not trained-weight accuracy",
        "evaluation": "ONNX Runtime CPU with Q/DQ kept in float (session.disable_quant_qdq): the graph's "
        "quantization error, independent of the CPU's int8 kernels (which saturate without VNNI)",
    }
