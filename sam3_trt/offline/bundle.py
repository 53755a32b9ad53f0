"""``sam3-trt bundle``: what a GPU machine without network needs to run sam3-trt, in parts that fit a limit.

Air-gapped GPU servers usually come with CUDA, PyTorch, numpy and ONNX (NVIDIA's PyTorch images, this
project's lent H100/H200) and lack the rest. The bundle holds wheels for the *target* Python and platform
(not this machine's): TensorRT for RTX, sam3 and the small packages it and sam3-trt need, and sam3-trt
itself; files larger than ``--part-mb`` are split, and the files are grouped into ``call1/``, ``call2/``...
folders of at most ``--call-mb`` each, for machines that receive files in size-limited transfers.
``unbundle.py`` (standard library only) reassembles the parts, checks every sha256 against
``bundle.json`` and installs with ``pip --no-index --no-deps --target``: nothing is fetched there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import Sam3TrtError
from .unbundle import sha256_file

#: Exact versions (as in requirements/lock.txt) of what a CUDA + PyTorch + ONNX image lacks.
BUNDLE_PACKAGES: tuple[tuple[str, str], ...] = (
    ("tensorrt-rtx-cu13", "1.7.1.116"),
    ("tensorrt-rtx-cu13-libs", "1.7.1.116"),
    ("tensorrt-rtx-cu13-bindings", "1.7.1.116"),
    ("sam3", "0.1.4"),
    ("ftfy", "6.3.1"),
    ("wcwidth", "0.9.4"),
    ("iopath", "0.1.10"),
    ("portalocker", "4.4.2"),
    ("pycocotools", "2.0.11"),
    ("onnxconverter-common", "1.16.0"),
    ("click", "8.5.1"),
    ("scipy", "1.17.1"),  # clicks and automatic masks: upstream's hole filling (connected components)
)

MANIFEST = "bundle.json"
UNBUNDLE = "unbundle.py"


def _pip(args: Sequence[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if not line.startswith("WARNING")][-1:]
        raise Sam3TrtError(f"bundle: {what} failed: {tail[0] if tail else 'pip exited ' + str(proc.returncode)}")


def _fetch(name: str, version: str, python: str, platform: str, dest: Path, work: Path) -> Path:
    """The wheel of ``name==version`` for the target: a binary wheel, or a pure wheel built from the sdist."""
    before = set(dest.iterdir())
    target = ["--python-version", python, "--implementation", "cp"]
    for tag in (platform, "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"):
        target += ["--platform", tag]
    spec = f"{name}=={version}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            *target,
            "-d",
            str(dest),
            spec,
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:  # source only (tensorrt-rtx-cu13's frontend, iopath): build a pure wheel here
        src = work / name
        _pip(["download", "-q", "--no-deps", "--no-binary=:all:", "-d", str(src), spec], f"downloading {spec}")
        (sdist,) = list(src.iterdir())
        _pip(["wheel", "-q", "--no-deps", "-w", str(dest), str(sdist)], f"building a wheel of {spec}")
    new = sorted(set(dest.iterdir()) - before)
    if len(new) != 1:
        raise Sam3TrtError(f"bundle: expected one wheel for {spec}, got {[p.name for p in new]}")
    wheel = new[0]
    tags = wheel.name[:-4].split("-")[-3:]
    if proc.returncode != 0 and tags[1:] != ["none", "any"]:
        raise Sam3TrtError(f"bundle: {spec} has no wheel for Python {python} on {platform} and is not pure Python")
    return wheel


def _project_wheel(dest: Path) -> Path:
    source = Path(__file__).resolve().parents[2]  # sam3_trt/offline/bundle.py -> the checkout
    if not (source / "pyproject.toml").is_file():
        raise Sam3TrtError("bundle: run it from a sam3-trt source checkout (the project's own wheel is built from it)")
    before = set(dest.iterdir())
    _pip(
        ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(source)], "building sam3-trt's wheel"
    )
    (wheel,) = sorted(set(dest.iterdir()) - before)
    return wheel


def _split(path: Path, part_bytes: int) -> list[Path]:
    parts = []
    with path.open("rb") as f:
        for i, block in enumerate(iter(lambda: f.read(part_bytes), b"")):
            part = path.with_name(f"{path.name}.part{i:02d}")
            part.write_bytes(block)
            parts.append(part)
    path.unlink()
    return parts


def build_bundle(
    out: str | os.PathLike[str],
    python: str = "3.12",
    platform: str = "manylinux_2_28_x86_64",
    part_mb: float = 60.0,
    call_mb: float = 60.0,
    packages: Sequence[tuple[str, str]] = BUNDLE_PACKAGES,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the bundle folder (see the module docstring); returns its ``bundle.json``.

    Args:
        out: Folder to write (published only when complete).
        python: Target Python version (``3.12``).
        platform: Target platform tag (``manylinux_2_28_x86_64``).
        part_mb: Split files larger than this (MiB).
        call_mb: Most MiB per ``callN/`` folder (one transfer each).
        packages: ``(name, exact version)`` to include, besides sam3-trt itself.
        progress: Called with one line per step.
        force: Replace an existing ``out``.

    Raises:
        Sam3TrtError: bad limits, a package without a wheel for the target, or ``out`` exists.
    """
    from ..manifest import make_staging, publish

    say = progress or (lambda _m: None)
    out = Path(out)
    if part_mb <= 0 or call_mb < part_mb:
        raise Sam3TrtError(f"--part-mb {part_mb} / --call-mb {call_mb}: need 0 < part-mb <= call-mb")
    if out.exists() and not force:
        raise Sam3TrtError(f"bundle folder {out} exists; pass --force to replace it")
    staging = make_staging(out)
    try:
        with tempfile.TemporaryDirectory(prefix="sam3trt-bundle-") as tmp:
            wheels = Path(tmp) / "wheels"
            wheels.mkdir()
            files = []
            for name, version in packages:
                say(f"bundle: {name}=={version} for Python {python}, {platform}")
                files.append(_fetch(name, version, python, platform, wheels, Path(tmp)))
            say("bundle: sam3-trt's own wheel")
            files.append(_project_wheel(wheels))
            entries, pieces = [], []
            for wheel in files:
                entry = {"file": wheel.name, "bytes": wheel.stat().st_size, "sha256": sha256_file(wheel), "parts": []}
                if wheel.stat().st_size > part_mb * 2**20:
                    for part in _split(wheel, int(part_mb * 2**20)):
                        entry["parts"].append({"file": part.name, "sha256": sha256_file(part)})
                        pieces.append(part)
                else:
                    pieces.append(wheel)
                entries.append(entry)
            calls: list[list[Path]] = []
            for piece in sorted(pieces, key=lambda p: -p.stat().st_size):  # first fit, largest first
                size = piece.stat().st_size
                fit = next((c for c in calls if sum(p.stat().st_size for p in c) + size <= call_mb * 2**20), None)
                if fit is None:
                    calls.append(fit := [])
                fit.append(piece)
            where = {}
            for i, call in enumerate(calls, 1):
                folder = staging / f"call{i}"
                folder.mkdir()
                for piece in call:
                    shutil.move(str(piece), folder / piece.name)
                    where[piece.name] = folder.name
        for entry in entries:
            entry["call"] = sorted({where[p["file"]] for p in entry["parts"]} or {where[entry["file"]]})
        manifest = {
            "kind": "offline-bundle",
            "python": python,
            "platform": platform,
            "part_mb": part_mb,
            "call_mb": call_mb,
            "calls": [f"call{i}" for i in range(1, len(calls) + 1)],
            "files": entries,
            "install": f"python3 {UNBUNDLE} SITE_DIR [FOLDER ...]  then  export PYTHONPATH=SITE_DIR",
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.copyfile(Path(__file__).with_name("unbundle.py"), staging / UNBUNDLE)
        (staging / "calls.md").write_text(_calls_md(manifest))
        publish(staging, out)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _calls_md(manifest: dict[str, Any]) -> str:
    lines = [
        f"# sam3-trt offline bundle (Python {manifest['python']}, {manifest['platform']})",
        "",
        "Carry bundle.json, unbundle.py and each callN/ folder to the offline machine (one transfer per folder",
        f"if transfers are limited to {manifest['call_mb']} MiB), put them in one place or pass each folder, then:",
        "",
        "    python3 unbundle.py /opt/sam3-trt-site call1 call2 ...   # reassembles, checks sha256, pip --no-index",
        "    export PYTHONPATH=/opt/sam3-trt-site",
        "",
    ]
    for call in manifest["calls"]:
        names = [e["file"] for e in manifest["files"] if call in e["call"]]
        lines.append(f"- {call}: " + ", ".join(names))
    return "\n".join(lines) + "\n"
