"""`sam3-trt bundle`: an offline machine installs it with no package index, from parts that fit a limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("tensorrt_rtx")

BUNDLED_MODULES = ("tensorrt_rtx", "ftfy", "iopath", "pycocotools", "onnxconverter_common", "scipy", "sam3", "sam3_trt")


def test_offline_bundle_installs_without_the_index(tmp_path):
    python = f"{sys.version_info.major}.{sys.version_info.minor}"  # this machine stands in for the target
    out = tmp_path / "bundle"
    proc = subprocess.run(
        [sys.executable, "-m", "sam3_trt.cli", "-q", "bundle", "--out", str(out), "--python", python,
         "--platform", "manylinux_2_28_x86_64", "--part-mb", "20", "--call-mb", "40"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "bundle.json").read_text())
    # the manifest's transfers are the folders on disk, and every file (or each of its parts) lies in one of them
    assert manifest["calls"] == sorted(p.name for p in out.iterdir() if p.is_dir())
    on_disk = sorted(f.name for c in manifest["calls"] for f in (out / c).iterdir())
    listed = sorted(q["file"] for e in manifest["files"] for q in (e["parts"] or [e]))
    assert on_disk == listed and len(set(on_disk)) == len(on_disk)
    for call in manifest["calls"]:  # every transfer fits its limit
        assert sum(p.stat().st_size for p in (out / call).iterdir()) <= 40 * 2**20
    libs = next(e for e in manifest["files"] if e["file"].startswith("tensorrt_rtx_cu13_libs"))
    assert len(libs["parts"]) >= 4  # ~95 MB split in 20 MiB parts
    assert {e["file"].split("-")[0] for e in manifest["files"]} >= {"sam3", "sam3_trt", "iopath", "pycocotools"}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = tmp_path / "site"
    offline = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/", PIP_FIND_LINKS="")
    offline.pop("PIP_EXTRA_INDEX_URL", None)
    calls = [str(out / c) for c in manifest["calls"]]
    run = subprocess.run(
        [str(venv / "bin" / "python"), str(out / "unbundle.py"), str(site), *calls],
        capture_output=True, text=True, timeout=600, env=offline,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"export PYTHONPATH={site}" in run.stdout
    # the bundled packages load from the site folder (numpy, onnx, torch: the GPU image's own)
    # (this checkout's editable-install finder is dropped: an offline machine has only the bundle's sam3-trt)
    check = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]; "
    )
    check += "import json, " + ", ".join(BUNDLED_MODULES) + "; print(json.dumps({m: __import__(m).__file__ for m in "
    check += f"{BUNDLED_MODULES!r}}} | {{'trt': tensorrt_rtx.__version__}}))"
    env = dict(os.environ, PYTHONPATH=str(site))
    loaded = subprocess.run(  # outside the checkout, whose sam3_trt/ would shadow the bundled one
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    files = json.loads(loaded.stdout)
    assert files.pop("trt") == "1.7.1.116"
    assert all(path.startswith(str(site)) for path in files.values()), files
    # a damaged part is one line, exit 2
    part = out / libs["call"][0] / libs["parts"][0]["file"]
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF
    part.write_bytes(bytes(data))
    bad = subprocess.run(
        [str(venv / "bin" / "python"), str(out / "unbundle.py"), str(tmp_path / "site2"), *calls],
        capture_output=True, text=True, timeout=600, env=offline,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "is damaged" in bad.stderr
