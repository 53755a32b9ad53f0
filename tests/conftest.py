"""Shared fixtures: one tiny export per session, one full-size export per session (fullsize tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


#: Session fixtures that export (or build engines from an export): a test that uses one is marked ``export``, and
#: ``make test-quick`` (``-m "not export"``) leaves it out. Tests that export by themselves carry the mark by hand.
EXPORT_FIXTURES = frozenset(
    {
        "tiny_export",
        "rtx_engines",
        "tiny_fp16",
        "full_export",
        "tracker_export",
        "planted_export",
        "planted_text_export",
    }
)


def pytest_collection_modifyitems(config, items):
    """Mark tests that need an export (``export``), and skip the full-size ones unless ``SAM3TRT_FULLSIZE=1``.

    Full-size tests run with ``SAM3TRT_FULLSIZE=1`` (``make test-full``): on CI's 2 cores they take ~23 min
    (export with parity ~15, processor vs upstream ~5, RTX build ~2.5), which keeps ``make test`` over its
    budget; the same mechanisms run on the tiny model in every run."""
    for item in items:
        if EXPORT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.export)
    if os.environ.get("SAM3TRT_FULLSIZE") == "1":
        return
    skip = pytest.mark.skip(
        reason="full-size tests run with SAM3TRT_FULLSIZE=1 (`make test-full`, ~23 min on 2 cores; see docs/testing.md)"
    )
    slow = pytest.mark.skip(reason="runs in `make test-full` (SAM3TRT_FULLSIZE=1): too slow for make test's budget")
    for item in items:
        if "fullsize" in item.keywords:
            item.add_marker(skip)
        elif "slow" in item.keywords:
            item.add_marker(slow)


# Disk the full-size tests write under the temp folder (measured: export 3.2 GB, FP16 copy 1.6 GB,
# largest engine set 2.1 GB), with room to spare.
FULLSIZE_DISK_GB = 12.0


def require_disk(folder: Path, gigabytes: float, what: str) -> None:
    """Fail (not skip) with a clear line when ``folder`` has less than ``gigabytes`` free."""
    free = shutil.disk_usage(folder).free / 1e9
    if free < gigabytes:
        pytest.fail(
            f"{what} needs about {gigabytes:.0f} GB free in {folder}, found {free:.1f} GB: free disk space "
            "(old pytest folders under the temp folder are a common cause) or point --basetemp elsewhere"
        )


@pytest.fixture(scope="session")
def tiny_model():
    """Tiny random-weight sam3 (same classes as the full model, reduced)."""
    from sam3_trt.export.model import load_model

    model, origin = load_model(variant="tiny", random_weights=True, seed=0)
    return model, origin


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, request):
    """Tiny export with parity and the TensorRT for RTX parse check (about 2 minutes).

    Set ``SAM3_TRT_TINY_EXPORT`` to an existing tiny export (vision batches 1 and 2, seed 0) to reuse it
    while working on tests that only read it.
    """
    from sam3_trt.export.exporter import ExportOptions, export

    reuse = os.environ.get("SAM3_TRT_TINY_EXPORT")
    if reuse:
        return Path(reuse), json.loads((Path(reuse) / "manifest.json").read_text())
    model, origin = request.getfixturevalue("tiny_model")
    out = tmp_path_factory.mktemp("exports") / "tiny"
    manifest = export(model, origin, out, ExportOptions(vision_batches=(1, 2)))
    return out, manifest


@pytest.fixture(scope="session")
def rtx_engines(tiny_export, tmp_path_factory):
    """TensorRT for RTX engines of the tiny export, built ahead of time for the RTX 5090 (sm120), no GPU needed."""
    from sam3_trt.engines.parse import rtx_available

    if not rtx_available():
        pytest.skip("tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')")
    from sam3_trt.engines.builder import build_engines
    from sam3_trt.engines.targets import resolve_target

    out, _ = tiny_export
    root = tmp_path_factory.mktemp("engines")
    manifest = build_engines(out, root, resolve_target("5090"), ci_build_options())
    return root, manifest


def ci_build_options():
    """Builder options of the engines CI runs processors on: shape buckets 1 and 4 (the default is 1, 2, 4, 8,
    16). Counts 2 and 3 still run padded and every warm-up still compiles each bucket, without the decoder's
    larger prompt batches on the CPU (about 1.8 s per prompt on the tiny model through ONNX Runtime) in each
    warm-up; counts past 4 run exact, as counts past 16 do by default."""
    from sam3_trt.engines.builder import BuildOptions
    from sam3_trt.engines.rtx_runtime import RtxRuntimeSettings

    return BuildOptions(rtx_runtime=RtxRuntimeSettings(shape_buckets=CI_SHAPE_BUCKETS))


@pytest.fixture(scope="session")
def tiny_fp16(tiny_export, tmp_path_factory):
    """The tiny export through the mixed-precision pass with the default policy (and its estimate)."""
    from sam3_trt.engines.mixed import convert_export
    from sam3_trt.engines.precision import DEFAULT_POLICY

    src, _ = tiny_export
    out = tmp_path_factory.mktemp("fp16") / "tiny-fp16"
    return src, out, convert_export(src, out, DEFAULT_POLICY)


@pytest.fixture(scope="session")
def full_export(tmp_path_factory):
    """Full-size random-weight export with the tracker graphs (``--video``), made once through the CLI in its
    own process (~13 GB peak).

    Set ``SAM3_TRT_FULL_EXPORT`` to an existing export folder to reuse it (it must hold a passing
    full-size random-weight export made by this version).
    """
    reuse = os.environ.get("SAM3_TRT_FULL_EXPORT")
    if reuse:
        out = Path(reuse)
    else:
        out = tmp_path_factory.mktemp("exports") / "full"
        require_disk(out.parent, FULLSIZE_DISK_GB, "the full-size tests (export, FP16 copy, engines)")
        cmd = [
            sys.executable,
            "-m",
            "sam3_trt.cli",
            "export",
            "--variant",
            "full",
            "--random-weights",
            "--seed",
            "0",
            "--out",
            str(out),
            "--force",
            "--video",
        ]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"full-size export failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return out, manifest


@pytest.fixture(scope="session")
def image_set(tmp_path_factory):
    """The drawn image set of the dataset tests: 20 usable images and 3 bad files (read-only for tests)."""
    from sam3_trt.testing.drawn_images import draw_image_set

    return draw_image_set(tmp_path_factory.mktemp("drawn") / "images")


@pytest.fixture(scope="session")
def tiny_tracker():
    """The tiny tracker (same classes as upstream's, one memory-attention layer), random weights, seed 0."""
    from sam3_trt.export.tracker_model import build_tracker

    return build_tracker("tiny", seed=0)


@pytest.fixture(scope="session")
def video_model():
    """The tiny image model with the tracker's neck levels (``sam2_convs``), as ``export --video`` loads it."""
    from sam3_trt.export.model import load_model

    return load_model("tiny", random_weights=True, seed=0, video=True)


#: The shape buckets of the engines CI builds (see :func:`rtx_engines`).
CI_SHAPE_BUCKETS = (1, 4)

#: How :func:`detecting_video_model` sharpens random weights' detections (see its doc).
DETECTION_SCORE_SCALE = 8.0
DETECTION_PRESENCE_BIAS = 6.0


@pytest.fixture(scope="session")
def detecting_video_model(video_model):
    """``video_model`` with decisive detection scores, for the video predictor's end-to-end tests.

    Random weights score every query near 0.6 and presence near 0.65, so the video builder's joint score
    (class x presence) keeps nothing above 0.5 and every query sits near the threshold. This copy scales
    the query projection of the dot-product scoring (logits spread x8) and raises the presence logit by 6:
    a few queries clear the thresholds by margins far above FP32 graph error. Only these two heads change
    (same architecture, still random); ``video_model`` itself is untouched.
    """
    import copy

    import torch

    model, origin = video_model
    model = copy.deepcopy(model)
    with torch.no_grad():
        scoring = model.dot_prod_scoring.hs_proj
        scoring.weight.mul_(DETECTION_SCORE_SCALE)
        scoring.bias.mul_(DETECTION_SCORE_SCALE)
        model.transformer.decoder.presence_token_head.layers[-1].bias.add_(DETECTION_PRESENCE_BIAS)
    return model, origin


@pytest.fixture(scope="session")
def tracker_export(detecting_video_model, tiny_tracker, tmp_path_factory):
    """``export(..., tracker=...)`` as ``sam3-trt export --video`` runs it, of :func:`detecting_video_model`.

    The vision graph is the video one; the text encoder and decoder come along for the video predictor.

    Set ``SAM3_TRT_VIDEO_EXPORT`` to such an export (tiny, seed 0) to reuse it while working on tests that
    only read it.
    """
    from sam3_trt.export.exporter import ExportOptions, export
    from sam3_trt.export.model import WeightsOrigin

    reuse = os.environ.get("SAM3_TRT_VIDEO_EXPORT")
    if reuse:
        yield Path(reuse), json.loads((Path(reuse) / "manifest.json").read_text())
        return
    model, origin = detecting_video_model
    out = tmp_path_factory.mktemp("video") / "export"
    tracker = (tiny_tracker, WeightsOrigin(kind="random", variant="tiny", seed=0))
    options = ExportOptions(graphs=("text_encoder", "decoder"), vision_batches=(1, 2))  # B2: a real axis here
    manifest = export(model, origin, out, options, tracker=tracker)
    yield out, manifest
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def eager_interactive(detecting_video_model, tiny_tracker):
    """Upstream's image model with its interactive predictor and upstream's processor, on CPU.

    The tracker is attached as ``build_sam3_image_model(enable_inst_interactivity=True)`` attaches it; the
    weights are those of the ``tracker_export`` fixture's export (random, seed 0).
    """
    import copy

    pytest.importorskip("sam3")
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

    from sam3_trt.checks.detection_parity import upstream_processor

    model = copy.deepcopy(detecting_video_model[0])
    model.inst_interactive_predictor = SAM3InteractiveImagePredictor(copy.deepcopy(tiny_tracker)).eval()
    with upstream_processor(model) as processor:
        yield model, processor


#: The clicked image of the click tests (non-square, smaller than the 1008 input, larger than the 288 masks).
CLICK_W, CLICK_H = 420, 300


@pytest.fixture(scope="session")
def eager_image_state(eager_interactive):
    """``(image, upstream's state)`` of the clicked image, encoded once for every click test."""
    import torch

    from sam3_trt.assets.images import demo_image

    image = demo_image(CLICK_W, CLICK_H)
    with torch.inference_mode():
        return image, eager_interactive[1].set_image(image)


@pytest.fixture(scope="session")
def eager_batch(eager_interactive):
    """Two images through upstream's ``set_image_batch`` and ``predict_inst_batch`` (clicks on one, a click and
    a box on the other, multimask logits): ``(images, prompts, upstream's state, expected)``."""
    import numpy as np
    import torch

    from sam3_trt.assets.images import demo_image
    from sam3_trt.export.patches import cpu_compat

    model, processor = eager_interactive
    images = [demo_image(CLICK_W, CLICK_H), demo_image(360, 360, variant=1)]
    prompts = {
        "point_coords_batch": [np.array([[150.0, 120.0]]), np.array([[200.0, 180.0], [40.0, 40.0]])],
        "point_labels_batch": [np.array([1]), np.array([1, 0])],
        "box_batch": [None, np.array([20.0, 30.0, 300.0, 330.0])],
    }
    with torch.inference_mode(), cpu_compat():
        state = processor.set_image_batch(images)
        expected = model.predict_inst_batch(state, **prompts, multimask_output=True, return_logits=True)
    return images, prompts, state, expected


def check_graph_io(path: Path, spec) -> None:
    """The ONNX file's inputs and outputs are ``spec``'s: names in order, element types, static sizes, and a named
    symbol wherever the spec has a dynamic axis (the exporter may rename output symbols); no tensor anywhere in
    the graph (shape-inferred) is complex."""
    import onnx

    dtypes = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16, "int64": onnx.TensorProto.INT64,
              "int32": onnx.TensorProto.INT32, "bool": onnx.TensorProto.BOOL}  # fmt: skip
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    for values, tensors in ((graph.input, spec.inputs), (graph.output, spec.outputs)):
        assert [v.name for v in values] == [t.name for t in tensors], (spec.name, [v.name for v in values])
        for v, t in zip(values, tensors, strict=True):
            assert v.type.tensor_type.elem_type == dtypes[t.dtype], (spec.name, t.name, v.type.tensor_type.elem_type)
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            want = list(t.shape)
            assert [d if isinstance(w, int) else "dyn" for d, w in zip(dims, want, strict=True)] == [
                w if isinstance(w, int) else "dyn" for w in want
            ], (spec.name, t.name, dims)
            assert all(isinstance(d, str) and d for d, w in zip(dims, want, strict=True) if isinstance(w, str)), (
                spec.name, t.name, dims,
            )  # fmt: skip
    inferred = onnx.shape_inference.infer_shapes(model).graph
    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    typed = [*inferred.value_info, *inferred.input, *inferred.output]
    intermediates = {o for n in graph.node for o in n.output} - {o.name for o in graph.output}
    typed_names = {v.name for v in inferred.value_info}
    assert len(intermediates & typed_names) >= len(intermediates) / 2, "shape inference typed too few tensors to tell"
    found = [v.name for v in typed if v.type.tensor_type.elem_type in complex_types]
    found += [i.name for i in graph.initializer if i.data_type in complex_types]
    assert not found, (spec.name, found[:5])


@pytest.fixture(scope="session")
def graph_io_check():
    """:func:`check_graph_io`, for tests in any folder."""
    return check_graph_io
