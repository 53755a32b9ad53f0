"""Shared fixtures: one tiny export per session, one full-size export per session (fullsize tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model():
    """Tiny random-weight sam3 (same classes as the full model, reduced)."""
    from sam3_trt.export.model import load_model

    model, origin = load_model(variant="tiny", random_weights=True, seed=0)
    return model, origin


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_model):
    """Tiny export with parity and the TensorRT for RTX parse check (about 2 minutes)."""
    from sam3_trt.export.exporter import ExportOptions, export

    model, origin = tiny_model
    out = tmp_path_factory.mktemp("exports") / "tiny"
    manifest = export(model, origin, out, ExportOptions(vision_batches=(1, 2)))
    return out, manifest


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
    """Full-size random-weight export, made once through the CLI in its own process (~10 GB peak).

    Set ``SAM3_TRT_FULL_EXPORT`` to an existing export folder to reuse it (it must hold a passing
    full-size random-weight export made by this version).
    """
    reuse = os.environ.get("SAM3_TRT_FULL_EXPORT")
    if reuse:
        out = Path(reuse)
    else:
        out = tmp_path_factory.mktemp("exports") / "full"
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
        ]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"full-size export failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return out, manifest
