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
    report = tmp_path / "report.json"
    proc = _run("parity", "--artifacts", str(out), "--backend", "onnxruntime", "--json", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["backend"] == "onnxruntime" and "RANDOM" in data["weights"]
    assert len(data["cases"]) == 6 and "parity passed" in proc.stdout


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
    assert "parity failed" in _error_line(proc) and "FAIL" in proc.stdout
