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
    names = {c["name"] for c in data["components"]}
    assert {"torch", "sam3", "onnxruntime", "tensorrt", "tensorrt_rtx", "cuda-python", "pycuda"} <= names
    for c in data["components"]:
        assert c["status"] in {"ok", "installed", "missing", "broken"}
        assert c["detail"]
    gpu = data["gpu"]
    assert gpu["available"] or gpu["reason"]
    text = _run("doctor")
    assert "gpu" in text.stdout and "torch" in text.stdout


def test_parity_command_writes_a_passing_report(tiny_export, tmp_path):
    out, _ = tiny_export
    report, figure = tmp_path / "report.json", tmp_path / "report.png"
    proc = _run(
        "parity", "--artifacts", str(out), "--backend", "onnxruntime", "--json", str(report), "--figure", str(figure)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["backend"] == "onnxruntime" and "RANDOM" in data["weights"]
    assert len(data["cases"]) == 6 and "parity passed" in proc.stdout
    assert [s["stage"] for s in data["stages"]] == ["vision_encoder", "text_encoder", "decoder"]
    for stage in data["stages"]:
        assert stage["passed"] and all(o["rel_l2"] <= 1e-4 and o["cosine"] > 0.9999 for o in stage["outputs"])
    _check_mask_figure(figure, width=640, height=480)


def _check_mask_figure(path, width, height):
    """Three panels of the image size; both mask panels show mask colours; the difference panel is dark."""
    import numpy as np
    from PIL import Image

    from sam3_trt.assets.images import demo_image

    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (height + 24, 3 * width + 20, 3)
    panels = [img[24:, i * (width + 10) : i * (width + 10) + width] for i in range(3)]
    dimmed = (np.asarray(demo_image(width, height), np.float32) * 0.5).astype(np.int16)
    coloured = [int((np.abs(p.astype(np.int16) - dimmed).max(axis=-1) > 3).sum()) for p in panels[:2]]
    assert min(coloured) > 100 and abs(coloured[0] - coloured[1]) <= 0.01 * coloured[0], coloured  # masks drawn
    diff = panels[2]
    assert (diff == 60).all(axis=-1).sum() > 100  # agreeing mask pixels
    assert (diff == [255, 40, 40]).all(axis=-1).sum() + (diff == [40, 40, 255]).all(axis=-1).sum() < 0.01 * diff.size


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
    proc = _run("parity", "--artifacts", str(bad), "--backend", "onnxruntime")
    assert proc.returncode == 1
    line = _error_line(proc)
    assert "parity failed (fp32 tolerances)" in line and "decoder." in line and "FAIL" in proc.stdout
