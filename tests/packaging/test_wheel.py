"""The core install: the wheel with its core dependencies only (no extras, no torch) runs a prompt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from sam3_trt import Sam3Processor
    from sam3_trt.assets.images import demo_image

    with Sam3Processor(sys.argv[1], confidence_threshold=0.0) as proc:
        state = proc.set_image(demo_image(160, 120))
        text = proc.set_text_prompt("a red square", state)
        proc.reset_all_prompts(state)
        box = proc.add_geometric_prompt([0.5, 0.5, 1.0, 1.0], True, state)
    print(json.dumps({
        "types": sorted({type(text[k]).__module__ for k in ("masks", "boxes", "scores")}),
        "text": [int(text["scores"].shape[0]), list(text["masks"].shape[1:])],
        "box": int(box["scores"].shape[0]),
        "torch": "torch" in sys.modules,
        "backend": proc.backend.name,
    }))
    """
)


def test_core_install_runs_text_and_box_prompts(tiny_export, tmp_path):
    export, _ = tiny_export
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("sam3_trt-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not installed & {"torch", "sam3", "tensorrt-rtx-cu13", "cuda-python"}, installed  # core only
    run = subprocess.run(
        [str(python), "-c", SCRIPT, str(export)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out == {
        "types": ["numpy"],
        "text": [200, [1, 120, 160]],
        "box": 200,
        "torch": False,
        "backend": "onnxruntime",
    }
    shutil.rmtree(venv, ignore_errors=True)
