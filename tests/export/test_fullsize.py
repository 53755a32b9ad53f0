"""The real artifact: the full-size sam3 architecture (random weights) exported once, with every check."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("sam3")

from sam3_trt.manifest import verify_files
from sam3_trt.specs import SPECS

pytestmark = pytest.mark.fullsize


def test_full_export_passes_parity_on_every_output(full_export):
    out, manifest = full_export
    verify_files(out, manifest)
    assert manifest["weights"]["variant"] == "full" and manifest["weights"]["kind"] == "random"
    assert 800e6 < manifest["model"]["parameters"] < 900e6
    parity = manifest["checks"]["parity"]
    assert parity["passed"] is True, [c for c in parity["cases"] if not c["passed"]]
    graphs = {c["graph"] for c in parity["cases"]}
    assert graphs == {"vision_encoder", "text_encoder", "decoder", "pipeline"}
    for case in parity["cases"]:
        for o in case["outputs"]:
            assert o["rel_l2"] <= 1e-4, (case["graph"], case["case"], o)


def test_full_graphs_parse_with_tensorrt_for_rtx(full_export):
    _, manifest = full_export
    rtx = manifest["checks"]["rtx_parse"]
    if rtx["status"] == "skipped":
        pytest.skip(rtx["reason"])
    assert rtx["status"] == "passed"
    assert {n: rtx["graphs"][n]["errors"] for n in SPECS} == {n: [] for n in SPECS}


def test_full_tracker_graphs_match_upstream_and_parse(full_export):
    """The full-size tracker (upstream's builder, random weights): every graph at its profile min and max."""
    from sam3_trt.specs import VIDEO_SPECS

    _, manifest = full_export
    assert manifest["video"]["weights"]["variant"] == "full"
    assert 11e6 < manifest["video"]["parameters"] < 12.5e6  # upstream's tracker without a backbone: 11.74 M
    parity = manifest["checks"]["video_parity"]
    assert parity["passed"] is True, [c for c in parity["cases"] if not c["passed"]]
    assert {c["graph"] for c in parity["cases"]} == set(VIDEO_SPECS)
    rtx = manifest["checks"]["rtx_parse"]
    if rtx["status"] != "skipped":
        assert {n: rtx["graphs"][n]["errors"] for n in VIDEO_SPECS} == {n: [] for n in VIDEO_SPECS}


def test_vision_graph_uses_external_data(full_export):
    out, manifest = full_export
    entry = manifest["graphs"]["vision_encoder"]
    assert (out / entry["file"]).stat().st_size < 50e6  # weights live in the .data file
    assert entry["bytes"] > 1.5e9


def test_full_processor_matches_upstream_sam3(full_export):
    """sam3_trt.Sam3Processor (ONNX Runtime) vs upstream eager Sam3Processor on the full-size model."""
    from sam3_trt import Sam3Processor
    from sam3_trt.assets.images import demo_image
    from sam3_trt.checks.detection_parity import run_detection_parity
    from sam3_trt.export.model import model_from_manifest
    from sam3_trt.runtime.backends import OnnxRuntimeBackend

    out, manifest = full_export
    model, origin = model_from_manifest(manifest)
    image = demo_image(640, 480)
    with Sam3Processor(out, backend=OnnxRuntimeBackend(out, memory_arena=False)) as proc:
        report = run_detection_parity(model, proc, [image], origin.describe(), "onnxruntime")
        assert report.passed, [c.describe() for c in report.cases if not c.passed]
        assert all(c.reference_kept >= 10 for c in report.cases)
        # three prompts in one decoder batch equal one by one
        proc.set_confidence_threshold(0.0)
        state = proc.set_image(image)
        prompts = ["a red square", "blue disc", "green triangle"]
        for prompt, batched in zip(prompts, proc.set_text_prompts(prompts, state), strict=True):
            single = proc.set_text_prompt(prompt, state)
            for key in ("masks_logits", "boxes", "scores"):
                assert (batched[key] - single[key]).abs().max().item() <= 1e-4, (prompt, key)


def test_full_rtx_engines_build_ahead_of_time(full_export, tmp_path):
    """The real artifact: TensorRT for RTX engines of the full-size graphs, built here without a GPU."""
    from sam3_trt.engines.parse import rtx_available

    if not rtx_available():
        pytest.skip("tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')")
    from sam3_trt.engines.builder import build_engines
    from sam3_trt.engines.targets import resolve_target

    out, _ = full_export
    manifest = build_engines(out, tmp_path, resolve_target("5090"))
    for name in SPECS:
        assert (tmp_path / "5090" / manifest["graphs"][name]["file"]).stat().st_size > 10e6, name


@pytest.fixture(scope="module")
def full_fp16(request, tmp_path_factory):
    """The full-size export through the default FP16 policy with its CPU estimate (~5 min, ~9 GB), in its own process."""
    if os.environ.get("SAM3TRT_FULL_FP16") != "1":
        # the full-size FP16 pass + estimate + build take ~15 of CI's minutes on a 2-core AVX2 machine, which
        # pushed `make test` near its 90-minute limit; the FP16 pass and estimate run on tiny in every CI run
        pytest.skip("full-size FP16 pass skipped by default (~15 min on 2 cores); run with SAM3TRT_FULL_FP16=1")
    full_export = request.getfixturevalue("full_export")  # only now: skipping must not cost the full export
    import subprocess
    import sys

    from sam3_trt.manifest import read_manifest

    out, _ = full_export
    dst = tmp_path_factory.mktemp("fp16") / "full-fp16"
    cmd = [sys.executable, "-m", "sam3_trt.cli", "fp16", "--onnx-dir", str(out), "--out", str(dst)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"full-size FP16 pass failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return dst, read_manifest(dst, kind="onnx-export")


def test_full_fp16_estimate_within_tolerance(full_fp16):
    """Default policy on the full-size random-weight model: every output within the FP16 tolerances."""
    from sam3_trt.tolerances import TOLERANCES

    _, manifest = full_fp16
    est = manifest["checks"]["fp16_estimate"]
    for case in est["cases"]:
        bar = TOLERANCES["fp16"][case["graph"]]
        for o in case["outputs"]:
            assert o["rel_l2"] <= bar.get(o["name"], bar[""])["rel_l2"], (case["graph"], o)
    vision = manifest["precision"]["graphs"]["vision_encoder"]
    assert len(vision["fp32_compute_nodes"]) == 32  # the 32 ViT blocks' fc1, kept FP32 by the default rule
    assert vision["fp16_nodes"] > 100


def test_full_fp16_rtx_engines_build_ahead_of_time(full_fp16, tmp_path):
    from sam3_trt.engines.parse import rtx_available

    if not rtx_available():
        pytest.skip("tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')")
    from sam3_trt.engines.builder import build_engines
    from sam3_trt.engines.targets import resolve_target

    out, _ = full_fp16
    manifest = build_engines(out, tmp_path, resolve_target("5090"))
    assert manifest["precision"]["mode"] == "fp16" and manifest["precision"]["fp16_estimate_passed"] is True
    for name in SPECS:
        assert (tmp_path / "5090" / manifest["graphs"][name]["file"]).stat().st_size > 10e6, name
