"""gpu-check: the dry run on a machine without a GPU, bad options, the deadline and --resume, and every stage
run on the CPU through the GPU doubles (``--simulate``), the rehearsal of the lent-GPU run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from sam3_trt.device import gpu_info  # noqa: E402

STAGE_KEYS = ["a", "b", "c", "d", "e"]


def _run(*args, timeout=1800):
    return subprocess.run(
        [sys.executable, "-m", "sam3_trt.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _statuses(report: Path) -> dict[str, str]:
    data = json.loads((report / "gpu-check.json").read_text())
    return {k: v["status"] for k, v in data["stages"].items()}


def test_dry_run_without_a_gpu_runs_stage_a_and_names_the_first_gpu_stage(tmp_path):
    info = gpu_info()
    if info.available:
        pytest.skip("a GPU is present: this test covers machines without one")
    report = tmp_path / "report"
    proc = _run("gpu-check", "--out", report)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _error_line(proc)
    assert "stage b (engines) needs an NVIDIA GPU" in line and info.reason in line and str(report) in line
    assert _statuses(report) == {"a": "ok", "b": "needs-gpu", "c": "needs-gpu", "d": "needs-gpu", "e": "needs-gpu"}
    data = json.loads((report / "gpu-check.json").read_text())
    assert data["simulated"] is False and data["ended"]
    env = data["stages"]["a"]["result"]
    assert env["gpu"]["available"] is False and env["gpu"]["reason"] == info.reason
    from importlib import metadata

    assert env["versions"]["onnxruntime"] == metadata.version("onnxruntime")
    summary = (report / "summary.md").read_text()
    assert "| b engines | needs-gpu |" in summary and "SIMULATED" not in summary


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--stages", "a,x"], "--stages a,x: use letters from a,b,c,d,e"),
        (["--rtx-cc", "sm90"], "--rtx-cc sm90: use current or one of sm75"),
        (["--deadline", "0"], "--deadline 0: give seconds > 0"),
        (["--repeats", "0"], "--repeats 0: need at least 1"),
        (["--aot-engines", "."], "--aot-engines .: no manifest.json there"),
    ],
)
def test_bad_options_are_one_line_before_any_work(tmp_path, args, words):
    proc = _run("gpu-check", "--out", tmp_path / "report", *args)
    assert proc.returncode == 2
    assert words in _error_line(proc)
    assert not (tmp_path / "report" / "gpu-check.json").exists()


def test_deadline_stops_cleanly_and_resume_keeps_what_finished(tiny_export, tmp_path):
    from sam3_trt.manifest import read_manifest, verify_files

    out, _ = tiny_export
    report = tmp_path / "report"
    proc = _run("gpu-check", "--simulate", "--out", report, "--stages", "a,b", "--tiny-export", out, "--deadline", 25)
    assert proc.returncode == 124, proc.stderr[-3000:]
    line = _error_line(proc)
    assert "reached its deadline (25 s) during stage b" in line and "--resume" in line
    first = json.loads((report / "gpu-check.json").read_text())
    assert _statuses(report) == {"a": "ok", "b": "stopped"}
    assert "deadline" in first["stages"]["b"]["why"] and first["ended"]
    assert "| b engines | stopped |" in (report / "summary.md").read_text()
    # nothing half-made looks complete: every folder with a manifest verifies
    for manifest in report.rglob("manifest.json"):
        verify_files(manifest.parent, read_manifest(manifest.parent))
    proc = _run("gpu-check", "--simulate", "--out", report, "--stages", "a", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = json.loads((report / "gpu-check.json").read_text())
    assert second["resumed_from"] == first["started"]
    assert second["stages"]["a"] == first["stages"]["a"]  # kept, not run again
    assert "b" not in second["stages"]  # a stopped stage is run again, not kept
    proc = _run("gpu-check", "--out", report, "--stages", "a", "--resume")  # a real run cannot resume a simulated one
    assert proc.returncode == 2 and "holds a simulated run" in _error_line(proc)


def test_simulated_run_executes_every_stage(tiny_export, rtx_engines, tiny_fp16, tmp_path):
    """All five stages on the CPU: engines built here for real (TensorRT for RTX, ahead of time), run by the
    TensorRT double as their ONNX graphs; eager on the CPU. Checks plumbing and reports, not GPU numbers."""
    import shutil

    from PIL import Image

    from sam3_trt.specs import SPECS

    out, _ = tiny_export
    aot_root, aot = rtx_engines
    report = tmp_path / "report"
    # the session's default-policy FP16 graphs of the same export: gpu-check reuses them as it reuses its own
    shutil.copytree(tiny_fp16[1], report / "tiny-fp16-default")
    proc = _run(
        "gpu-check", "--simulate", "--out", report, "--tiny-export", out, "--full-variant", "tiny",
        "--repeats", 1, "--aot-engines", aot_root / aot["target"], "--shape-buckets", "none",
    )  # fmt: skip
    assert f"fp16: {report / 'tiny-fp16-default'} was made by policy 'default' from these graphs; reusing it" in (
        proc.stderr
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _statuses(report) == dict.fromkeys(STAGE_KEYS, "ok")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["stages"] == dict.fromkeys(STAGE_KEYS, "ok")
    data = json.loads((report / "gpu-check.json").read_text())
    assert data["simulated"] is True and "SIMULATED" in (report / "summary.md").read_text()
    stages = {k: v["result"] for k, v in data["stages"].items()}

    # b: two engine sets built for the (fake) GPU's compute capability, loaded and run once each; AOT run too
    b = stages["b"]
    assert b["target"]["flavour"] == "rtx" and b["target"]["sm"] == "sm120"
    for label in ("fp32", "fp16"):
        entry = b["sets"][label]
        manifest = json.loads((Path(entry["folder"]) / "manifest.json").read_text())
        assert manifest["compute_capabilities"] == ["sm120"] and manifest["precision"]["mode"] == label
        assert entry["device_memory"] == "torch" and set(entry["engine_ms"]) == set(SPECS)
        # the runtime settings and warm-up serve and bench use: every bucketed shape before the smoke run
        assert entry["rtx_runtime"]["kernel_specialization"] == "eager" and entry["scratch_mb"] == 13.0
        # --shape-buckets none: exact counts, one shape per graph to warm up (the buckets: runtime tests)
        assert entry["warm_up"]["shapes"] == {"vision_encoder": 1, "text_encoder": 1, "decoder": 1}
        assert manifest["rtx_runtime"]["shape_buckets"] == []
        assert Path(entry["folder"]).is_relative_to(report)  # everything it writes stays in --out
    assert "error" not in b["aot"] and set(b["aot"]["engine_ms"]) == set(SPECS)

    # c: each set against eager FP32 with its own tolerance column; files written and decodable
    c = stages["c"]
    for label, worst in (("fp32", 1e-4), ("fp16", 5e-2)):
        assert c[label]["passed"] and c[label]["tolerances"] == label
        assert set(c[label]["cosine"]) >= {"fpn0", "fpn1", "fpn2", "pred_masks"}
        assert max(c[label]["rel_l2"].values()) < worst
        assert json.loads((report / c[label]["file"]).read_text())["precision"] == label
        Image.open(report / c[label]["file"].replace(".json", ".png")).verify()
    assert max(c["fp16"]["rel_l2"].values()) > max(c["fp32"]["rel_l2"].values())  # FP16 graphs really ran

    # d: bench of eager FP32, eager bf16 autocast and the engines; eager on the CPU because simulated
    d = stages["d"]
    bench = json.loads((report / d["bench_file"]).read_text())
    assert set(bench["backends"]) == {"torch", "torch-bf16", "tensorrt"} and bench["simulated"] is True
    assert bench["backends"]["torch-bf16"]["eager"] == {"device": "cpu", "autocast": "bfloat16"}
    assert "test double" in bench["backends"]["tensorrt"]["device"]["name"]
    assert set(d["engine_gpu_ms"]) == set(SPECS) and d["median_ms"]["tensorrt"]["end_to_end"] > 0
    Image.open(report / d["bench_file"].replace(".json", ".png")).verify()

    # e: the default policy and attention in FP32; the latter's graphs keep every Softmax in FP32
    e = stages["e"]
    assert set(e) >= {"default", "attention-fp32"} and e["default"] == c["fp16"]  # same engines, measured once
    # read from the converted graphs themselves (shape-inferred types of each Softmax's input and output)
    for policy, softmax_fp16 in (("default", True), ("attention-fp32", False)):
        for graph in SPECS:
            types = _softmax_types(report / f"tiny-fp16-{policy}" / SPECS[graph].onnx_file)
            assert types, (policy, graph)  # every graph has attention
            if softmax_fp16:  # the default policy runs attention's Softmax in FP16
                assert onnx.TensorProto.FLOAT16 in types, (policy, graph, set(types))
            else:  # attention-fp32: every Softmax reads and writes FP32
                assert set(types) == {onnx.TensorProto.FLOAT}, (policy, graph, set(types))
    assert e["attention-fp32"]["passed"]


def _softmax_types(path: Path) -> list[int]:
    """Element types of every Softmax node's input and output in the ONNX file, from shape inference."""
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    nodes = [n for n in model.graph.node if n.op_type == "Softmax"]
    return [types[t] for n in nodes for t in (*n.input, *n.output)]


def test_parity_headline_carries_a_nan_case_through():
    """A NaN in any case shows in the summary's worst values, wherever it sits among the cases."""
    import math
    from types import SimpleNamespace

    from sam3_trt.checks.gpu_check.run import summarize_parity

    def case(iou, score, box):
        return SimpleNamespace(mask_iou_min=iou, score_max_abs=score, box_px_max=box)

    fine = case(0.99, 1e-3, 0.5)
    for cases in ([fine, case(math.nan, math.nan, math.nan)], [case(math.nan, math.nan, math.nan), fine]):
        rep = SimpleNamespace(stages=[], cases=cases, passed=False, failures=lambda: ["nan"])
        got = summarize_parity(rep)
        assert all(math.isnan(got[k]) for k in ("mask_iou_min", "score_max_abs", "box_px_max")), got
    got = summarize_parity(SimpleNamespace(stages=[], cases=[fine, case(0.5, 2e-3, 3.0)], passed=True, failures=list))
    assert (got["mask_iou_min"], got["score_max_abs"], got["box_px_max"]) == (0.5, 2e-3, 3.0)


def test_rtx_target_for_unlisted_gpus():
    from sam3_trt.device import GpuInfo
    from sam3_trt.engines.targets import resolve_target, rtx_target
    from sam3_trt.errors import Sam3TrtError

    h200 = GpuInfo(True, ("NVIDIA H200",), ((9, 0),))
    with pytest.raises(Sam3TrtError, match="TensorRT for RTX cannot target sm90"):
        resolve_target("auto", h200, "rtx")  # the product refuses; gpu-check asks explicitly
    current = rtx_target("current", h200)
    assert (current.sm, current.flavour, current.name) == ("current", "rtx", "rtx-current-sm90")
    assert rtx_target("SM80").sm == "sm80"
    with pytest.raises(Sam3TrtError, match="--rtx-cc current builds for the local GPU and there is none"):
        rtx_target("current", GpuInfo(False, reason="no driver"))
    with pytest.raises(Sam3TrtError, match="--rtx-cc sm90: use current or one of"):
        rtx_target("sm90", h200)


def test_unlisted_gpu_build_is_probed_in_a_child_that_may_abort(tmp_path, monkeypatch):
    """On a GPU TensorRT for RTX does not list, stage b asks a child process to build for CURRENT first: a child
    that fails or aborts becomes the stage's one-line failure, never gpu-check's death."""
    from sam3_trt.checks.gpu_check import stages
    from sam3_trt.checks.gpu_check.report import CheckReport
    from sam3_trt.checks.gpu_check.run import CheckContext, GpuCheckOptions
    from sam3_trt.device import GpuInfo
    from sam3_trt.engines import probe

    assert probe.probe_build("sm89")["built"]  # a listed target builds ahead of time, no GPU needed
    h100 = GpuInfo(True, ("NVIDIA H100 80GB HBM3",), ((9, 0),))
    options = GpuCheckOptions(out=tmp_path, flavour="rtx")
    ctx = CheckContext(options, CheckReport(tmp_path, {}), h100, None, lambda _m: None)
    # here: no GPU behind CURRENT, so TensorRT for RTX's build fails cleanly in the child
    with pytest.raises(stages.StageFailed, match=r"cannot build for this GPU \(sm90\).*ended with exit 4") as failed:
        stages.engines(ctx)
    assert failed.value.result["rtx_probe"]["built"] is False and "export" not in failed.value.result
    # a child killed by a signal (an abort in TensorRT) is reported by the signal's name
    aborting = tmp_path / "python"
    aborting.write_text("#!/bin/sh\nkill -ABRT $$\n")
    aborting.chmod(0o755)
    monkeypatch.setattr(probe.sys, "executable", str(aborting))
    assert probe.probe_build("current")["exit"] == "SIGABRT"
    with pytest.raises(stages.StageFailed, match=r"ended with SIGABRT"):
        stages.engines(CheckContext(options, CheckReport(tmp_path, {}), h100, None, lambda _m: None))


def test_check_target_false_leaves_the_compute_capability_verdict_to_tensorrt(rtx_engines, tiny_export):
    """sm120 plans: refused on an sm90 GPU by sam3-trt's check, and without it by TensorRT (its double refuses
    plans of other compute capabilities, as TensorRT's deserialisation does); on an sm120 GPU with the check off
    they load and give what ONNX Runtime gives on the same graphs."""
    import numpy as np

    from sam3_trt.assets.images import demo_image
    from sam3_trt.errors import Sam3TrtError
    from sam3_trt.manifest import read_manifest
    from sam3_trt.runtime.backends.tensorrt import TensorRTBackend
    from sam3_trt.runtime.processor import Sam3Processor
    from sam3_trt.testing import FakeGpu, gpu_doubles

    root, manifest = rtx_engines
    folder = root / manifest["target"]
    h200 = FakeGpu(names=("NVIDIA H200 (sam3-trt test double)",), compute_capabilities=((9, 0),))
    with gpu_doubles(folder, gpu=h200):
        with pytest.raises(Sam3TrtError, match=r"built for sm120, but GPU 0 \(NVIDIA H200.*\) is sm90"):
            TensorRTBackend(folder, read_manifest(folder))
        with pytest.raises(Sam3TrtError, match=r"could not deserialize .*do not include this device's sm90"):
            TensorRTBackend(folder, read_manifest(folder), check_target=False)
    with gpu_doubles(folder):  # the default double: an RTX 5090, sm120
        backend = TensorRTBackend(folder, read_manifest(folder), check_target=False)
        with Sam3Processor(folder, backend=backend, confidence_threshold=0.0) as proc:
            got = proc.set_text_prompt("red square", proc.set_image(demo_image()))
            got = {k: np.asarray(got[k].cpu() if hasattr(got[k], "cpu") else got[k]) for k in ("scores", "boxes")}
    with Sam3Processor(tiny_export[0], backend="onnxruntime", confidence_threshold=0.0) as proc:
        want = proc.set_text_prompt("red square", proc.set_image(demo_image()))
    for key in ("scores", "boxes"):
        assert np.isfinite(got[key]).all() and got[key].shape == np.asarray(want[key]).shape, key
        np.testing.assert_allclose(got[key], np.asarray(want[key]), rtol=0, atol=1e-5, err_msg=key)


@pytest.mark.gpu
def test_gpu_check_engine_stages_on_a_gpu(tiny_export, tmp_path):
    """GPU only (not yet run on hardware by this project): stages a-c for real."""
    info = gpu_info()
    if not info.available:
        pytest.skip(f"needs an NVIDIA GPU ({info.reason}); gpu-check's GPU stages have not been run on hardware")
    out, _ = tiny_export
    report = tmp_path / "report"
    proc = _run("gpu-check", "--out", report, "--stages", "a,b,c", "--tiny-export", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _statuses(report) == {"a": "ok", "b": "ok", "c": "ok"}
