"""CLI: bad input gives one line naming the path and the fix, no traceback, non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def _run(*args):
    return subprocess.run([sys.executable, "-m", "sam3_trt.cli", *args], capture_output=True, text=True, timeout=600)


def _error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_missing_checkpoint(tmp_path):
    proc = _run("export", "--variant", "tiny", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "checkpoint not found" in line and "nope.pt" in line and "--random-weights" in line
    assert not (tmp_path / "o").exists()


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "sam3.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    proc = _run("export", "--variant", "tiny", "--checkpoint", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "could not read checkpoint" in line and str(bad) in line and "download sam3.pt again" in line
    assert not (tmp_path / "o").exists()


def test_checkpoint_with_wrong_keys(tmp_path):
    import torch

    ckpt = tmp_path / "other.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(1)}}, ckpt)
    proc = _run("export", "--variant", "tiny", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "no image-model weights" in _error_line(proc)


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = _run(
        "export",
        "--variant",
        "tiny",
        "--random-weights",
        "--out",
        str(blocker / "out"),
        "--no-parity",
        "--no-rtx-parse",
    )
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "cannot write to output folder" in line and str(blocker / "out") in line and "--out" in line


def test_no_weights_source_is_a_usage_error(tmp_path):
    proc = _run("export", "--variant", "tiny", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "--checkpoint PATH, --from-hf or --random-weights" in _error_line(proc)


def test_doctor_reports_every_component():
    proc = _run("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    by_name = {c["name"]: c for c in data["components"]}
    assert {"torch", "sam3", "onnxruntime", "tensorrt", "tensorrt_rtx", "cuda-python"} <= set(by_name)
    assert "pycuda" not in by_name  # nothing uses it: doctor lists what the code actually uses
    # each entry names its real use, and this machine's installs are reported as they are
    assert "device_memory='cuda-python'" in by_name["cuda-python"]["for"]
    assert by_name["cuda-python"]["status"] == "ok" and by_name["tensorrt_rtx"]["status"] == "installed"
    gpu = data["gpu"]
    if not gpu["available"]:
        assert gpu["reason"] and data["device_memory"].startswith("none: no GPU")
    text = _run("doctor")
    assert "device memory" in text.stdout and "torch" in text.stdout


@pytest.mark.slow  # the export fixture runs the same parity on every CI run; the command's wrapper: make test-full
def test_parity_command_writes_a_passing_report(tiny_export, tmp_path):
    out, _ = tiny_export
    report, figure, saved = tmp_path / "report.json", tmp_path / "report.png", tmp_path / "outputs.json"
    # one prompt: the default cases (text, text + negative box, box only) run in test_processor and make demo
    proc = _run(
        "parity", "--artifacts", str(out), "--backend", "onnxruntime", "--json", str(report), "--figure", str(figure),
        "--save-outputs", str(saved), "--prompt", "a red square",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_polygraphy_run_results(saved)
    data = json.loads(report.read_text())
    assert data["backend"] == "onnxruntime" and "RANDOM" in data["weights"]
    # the prompt at threshold 0 (all 200 queries compared) and at a threshold that keeps some of them
    assert [c["case"] for c in data["cases"]] == ["image0:text:a red square"] * 2 and "parity passed" in proc.stdout
    assert [s["stage"] for s in data["stages"]] == ["vision_encoder", "text_encoder", "decoder"]
    for stage in data["stages"]:
        assert stage["passed"] and all(o["rel_l2"] <= 1e-4 and o["cosine"] > 0.9999 for o in stage["outputs"])
    _check_mask_figure(figure, width=640, height=480)


def _check_polygraphy_run_results(path):
    """Polygraphy itself loads what --save-outputs wrote: both runners, every graph output, matching inputs."""
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    from sam3_trt.specs import SPECS

    results = RunResults.load(str(path))
    assert [name for name, _ in results] == ["eager-sam3", "sam3-trt-onnxruntime"]
    outputs = {t.name for spec in SPECS.values() for t in spec.outputs}
    (eager,), (ours,) = (iterations for _, iterations in results)
    assert set(eager.keys()) == set(ours.keys()) == outputs
    assert float(abs(eager["fpn2"] - ours["fpn2"]).max()) < 5e-3  # real outputs, not placeholders
    for name, spec in SPECS.items():
        (feeds,) = load_json(str(path.with_name(f"{path.stem}.{name}.inputs.json")))
        assert set(feeds) == set(spec.input_names)


def _check_mask_figure(path, width, height):
    """Two panels showing the image under mask outlines, a difference panel with its colour scale, the stamp."""
    import numpy as np
    from PIL import Image

    from sam3_trt.assets.images import demo_image
    from sam3_trt.checks.figures import SERIES_COLOURS, parity_layout
    from sam3_trt.runtime.draw import STAMP_COLOUR

    _, head, scale_h = parity_layout(height, width)
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.shape == (head + height + scale_h, 3 * width + 20, 3)
    panels = [img[head : head + height, i * (width + 10) : i * (width + 10) + width] for i in range(3)]
    scene = np.asarray(demo_image(width, height)).astype(int)
    for panel in panels[:2]:
        assert np.corrcoef(panel.ravel(), scene.ravel())[0, 1] > 0.5  # the image stays visible under the masks
        assert (np.abs(panel - np.array(SERIES_COLOURS[0])).sum(-1) == 0).sum() > 100  # mask outlines drawn
    bar = img[head + height + 6, 2 * (width + 10) : 2 * (width + 10) + width]
    assert bar[0].sum() < 30 and bar[-1].tolist() == [255, 240, 80]  # the colour scale runs 0 .. max
    assert (np.abs(img - np.array(STAMP_COLOUR)).sum(-1) == 0).sum() > 300  # random weights say so


@pytest.mark.slow  # the export fixture runs the same parity on every CI run; the command's wrapper: make test-full
def test_parity_command_fails_on_a_tampered_export(tiny_export, tmp_path):
    import shutil

    import onnx
    from onnx import numpy_helper

    out, _ = tiny_export
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    graph = onnx.load(str(bad / "decoder.onnx"))
    init = max(graph.graph.initializer, key=lambda t: len(t.raw_data) or t.ByteSize())
    arr = numpy_helper.to_array(init, base_dir=str(bad)) * 1.05
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(graph, str(bad / "decoder.onnx"), save_as_external_data=True, location="decoder.onnx.data")
    # a consistent-looking folder (manifest updated), so the numbers, not the integrity check, must catch it
    from sam3_trt.export.exporter import file_entry

    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["graphs"]["decoder"] |= file_entry(bad / "decoder.onnx")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    # one prompt: the per-graph stage must catch it (the default end-to-end cases run in the passing test)
    proc = _run("parity", "--artifacts", str(bad), "--backend", "onnxruntime", "--prompt", "a red square")
    assert proc.returncode == 1
    line = _error_line(proc)
    assert "parity failed (fp32 tolerances)" in line and "decoder." in line and "FAIL" in proc.stdout
