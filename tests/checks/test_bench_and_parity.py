"""bench and parity on FP16 graphs: run on the tiny export, outputs decoded and checked (gpu-check: test_gpu_check)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")


def _run(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "sam3_trt.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_bench_measures_every_stage_beside_eager(tiny_export, tmp_path):
    from PIL import Image

    from sam3_trt.checks.bench import AUTOMATIC_STAGES, CLICK_STAGES, STAGES
    from sam3_trt.checks.figures import SERIES_COLOURS

    out, _ = tiny_export
    report_path, figure = tmp_path / "bench.json", tmp_path / "bench.png"
    proc = _run(
        "bench", "--artifacts", str(out), "--backends", "torch,onnxruntime", "--image-size", "640x480",
        "--prompts", "2", "--repeats", "2", "--warmup", "1", "--threads", "2",
        "--json", str(report_path), "--figure", str(figure),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert set(report["backends"]) == {"torch", "onnxruntime"}
    ours, eager = report["backends"]["onnxruntime"], report["backends"]["torch"]
    image_stages = set(STAGES) - set(CLICK_STAGES) - set(AUTOMATIC_STAGES)
    assert set(ours["stages"]) == image_stages and set(eager["stages"]) == image_stages - {"preprocess"}
    assert ours["attention_sites_fused"]["vision_encoder"] == 2  # the tiny ViT's two blocks, on the CPU
    for result in (ours, eager):
        assert result["threads"] == 2 and result["repeats"] == 2 and result["prompts"] == 2
        assert result["load_s"] > 0 and result["peak_rss_mb"] > 100
        for stage, st in result["stages"].items():
            assert 0 < st["min_ms"] <= st["median_ms"] <= st["p90_ms"], (stage, st)
    # stage parts add up: set_image covers the vision encoder; a cold prompt costs text + decoder + post
    assert ours["stages"]["vision_encoder"]["min_ms"] <= ours["stages"]["set_image"]["median_ms"]
    # warm prompts hit the text cache (a mechanism, not a timing: tiny-model times are within noise)
    assert ours["text_encoder_runs_when_warm"] == 0
    assert set(report["speedup_vs_eager"]["onnxruntime"]) >= {"set_image", "text_cold", "end_to_end"}
    assert set(report["target_check"]["cpu"]) == {"set_image", "text_cold", "text_warm", "peak_rss"}
    assert report["machine"]["cpu_count"] >= 1 and "RANDOM" in json.dumps(report["weights"]).upper()
    assert "set_image" in proc.stdout and "onnxruntime vs eager" in proc.stdout
    img = np.asarray(Image.open(figure).convert("RGB"))
    for colour in SERIES_COLOURS[:2]:  # one bar colour per backend, both drawn
        assert (img == colour).all(axis=-1).sum() > 200, colour


def _planted(backend: str, ms: dict[str, float], rss_mb: float) -> dict:
    from sam3_trt.checks.bench import STAGES

    stages = {s: {"median_ms": ms.get(s, 10.0), "p90_ms": ms.get(s, 10.0), "min_ms": ms.get(s, 10.0)} for s in STAGES}
    return {"backend": backend, "threads": 2, "repeats": 1, "warmup": 0, "prompts": 1, "load_s": 1.0,
            "stages": stages, "peak_rss_mb": rss_mb}  # fmt: skip


def test_bench_verdicts_follow_the_measured_stage_times(tmp_path, monkeypatch):
    """Workers stubbed with planted stage times: ratios are eager/backend, and a slower backend flips the verdict."""
    from sam3_trt.checks import bench
    from sam3_trt.manifest import write_manifest

    out = tmp_path / "export"  # only its manifest is read before the (stubbed) workers run
    out.mkdir()
    write_manifest(out, {"kind": "onnx-export", "weights": {"kind": "random"}})
    eager = {"set_image": 1000.0, "text_cold": 300.0, "text_warm": 300.0, "end_to_end": 1400.0}
    timings = {
        "torch": (eager, 5000.0),
        "onnxruntime": ({"set_image": 500.0, "text_cold": 200.0, "text_warm": 100.0, "end_to_end": 800.0}, 4000.0),
    }
    monkeypatch.setattr(bench, "_spawn", lambda cfg: _planted(cfg.backend, *timings[cfg.backend]))
    report = bench.run_bench(out, ["torch", "onnxruntime"], repeats=1, warmup=0)
    ratios = report["speedup_vs_eager"]["onnxruntime"]
    assert (ratios["set_image"], ratios["text_cold"], ratios["text_warm"]) == (2.0, 1.5, 3.0)
    assert ratios["peak_rss_ratio"] == 0.8
    checks = report["target_check"]["cpu"]
    assert all(c["met"] for c in checks.values()), checks
    assert checks["set_image"]["measured"] == 2.0
    # ONNX Runtime made slower on set_image (and heavier): those verdicts flip, the others stay
    timings["onnxruntime"] = ({**timings["onnxruntime"][0], "set_image": 900.0}, 6000.0)
    checks = bench.run_bench(out, ["torch", "onnxruntime"], repeats=1, warmup=0)["target_check"]["cpu"]
    assert {k for k, c in checks.items() if not c["met"]} == {"set_image", "peak_rss"}
    assert checks["set_image"]["measured"] == pytest.approx(1000 / 900, abs=1e-3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backends", "torch,foo"], "use a comma list of torch, onnxruntime, tensorrt"),
        (["--image-size", "12"], "use WIDTHxHEIGHT"),
        (["--backends", "tensorrt"], "needs --engines DIR"),
        (["--prompts", "0"], "--prompts 0"),
        (["--clicks"], "has no video_vision_encoder or interactive_mask_head graph; clicks need an export made with"),
        (["--automatic", "2"], "has no video_vision_encoder or interactive_mask_head graph"),
        (["--automatic", "-1"], "--automatic -1: give the grid's points per side, 1 to 64 (0: off)"),
    ],
)
def test_bench_bad_input_is_one_line(tiny_export, args, message):
    out, _ = tiny_export
    proc = _run("bench", "--artifacts", str(out), *args)
    assert proc.returncode == 2 and message in _error_line(proc)


def test_stage_parity_fails_on_tight_tolerances(tiny_export, tiny_model):
    import copy

    from sam3_trt import Sam3Processor
    from sam3_trt.assets.images import demo_image
    from sam3_trt.checks.detection_parity import run_stage_parity
    from sam3_trt.tolerances import TOLERANCES

    out, _ = tiny_export
    model, _ = tiny_model
    tight = copy.deepcopy(TOLERANCES)
    tight["fp32"]["text_encoder"]["text_features"] = {"max_abs": 0.0, "rel_l2": 0.0}
    with Sam3Processor(out, backend="onnxruntime") as proc:
        stages = run_stage_parity(model, proc, demo_image(), table=tight)
    failed = {(s.stage, c.name) for s in stages for c in s.checks if not c.passed}
    assert failed == {("text_encoder", "text_features")}


def test_parity_of_fp16_graphs_uses_fp16_tolerances(tiny_fp16, tmp_path):
    """ONNX Runtime on the FP16 graphs against eager FP32: passes FP16 tolerances, would fail FP32 ones."""
    _, fp16_dir, _ = tiny_fp16
    report = tmp_path / "p.json"
    proc = _run("parity", "--artifacts", str(fp16_dir), "--backend", "onnxruntime", "--json", str(report))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["precision"] == "fp16"
    worst = max(o["rel_l2"] for s in data["stages"] for o in s["outputs"])
    assert 1e-4 < worst < 2e-2  # beyond the FP32 bar, within the FP16 one


def test_full_size_disk_guard_names_the_folder_and_the_shortfall(tmp_path):
    from conftest import require_disk

    require_disk(tmp_path, 0.001, "a small step")  # enough room: no error
    with pytest.raises(pytest.fail.Exception, match=r"needs about 1000000 GB free in .*found [0-9.]+ GB"):
        require_disk(tmp_path, 1e6, "the full-size tests")


def test_bench_clicks_times_predict_inst_beside_upstreams(tracker_export, monkeypatch):
    """``bench --clicks`` on the video export: a click and a refining call on both sides, the click head's graph
    time inside the refining call, the rows printed; the calls are those :func:`_click_stages` makes."""
    from sam3_trt.checks import bench

    out, _ = tracker_export
    calls = []
    real = bench._click_stages

    def recording(predict, size, sync):
        def spy(**kw):
            got = predict(**kw)
            calls.append((kw, got))
            return got

        return real(spy, size, sync)

    monkeypatch.setattr(bench, "_click_stages", recording)
    report = bench.run_bench(out, ["torch", "onnxruntime"], (420, 300), repeats=1, warmup=0, threads=2,
                             isolate=False, clicks=True, automatic=2)  # fmt: skip
    ours, eager = report["backends"]["onnxruntime"]["stages"], report["backends"]["torch"]["stages"]
    assert set(bench.CLICK_STAGES) <= set(ours) and {"click", "click_refine"} <= set(eager)
    # automatic masks of the image, 2 x 2 grid, filters off: ours and SAM2's generator over SAM3's predictor
    assert ours["automatic"]["median_ms"] > 0 and eager["automatic"]["median_ms"] > 0
    found = {b: r["automatic"] for b, r in report["backends"].items()}
    assert found["onnxruntime"]["points"] == found["torch"]["points"] == 4
    assert 1 <= found["onnxruntime"]["masks"] == found["torch"]["masks"]  # the same weights keep the same masks
    assert 0 < ours["click_head"]["median_ms"] <= ours["click_refine"]["median_ms"]
    # each side: a centre click with three masks, then the refine with the best of them fed back as logits
    assert len(calls) == 4
    for (first, (_, ious, low_res)), (refine, _) in zip(calls[::2], calls[1::2], strict=True):
        assert first["point_coords"].tolist() == [[210.0, 150.0]] and first["multimask_output"]
        assert refine["point_labels"].tolist() == [1, 0] and not refine["multimask_output"]
        np.testing.assert_array_equal(refine["mask_input"], np.asarray(low_res)[int(np.argmax(ious))][None])
    lines = bench.bench_lines(report)
    assert any(line.startswith("click_refine") for line in lines)
    assert not any(line.startswith("click") for line in bench.bench_lines({**report, "backends": {
        b: {**r, "stages": {k: v for k, v in r["stages"].items() if not k.startswith("click")}}
        for b, r in report["backends"].items()}}))  # fmt: skip
