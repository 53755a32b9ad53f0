"""``manifest.json``: what made an artifact folder. Every reader checks it before use."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import Sam3TrtError

MANIFEST_FILE = "manifest.json"
FORMAT = 1


def write_manifest(folder: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``data`` (plus the format number) as ``folder/manifest.json`` atomically."""
    path = Path(folder) / MANIFEST_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **data}, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """Read and validate ``folder/manifest.json``.

    Args:
        folder: Artifact folder.
        kind: Expected ``"kind"`` (``"onnx-export"``, ``"engines"``), or ``None`` for any.

    Raises:
        Sam3TrtError: missing folder or manifest, invalid JSON, unknown format or wrong kind.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise Sam3TrtError(f"artifact folder {folder} does not exist; run `sam3-trt export --out {folder}` first")
    if not path.is_file():
        raise Sam3TrtError(
            f"{folder} has no {MANIFEST_FILE}: it is not a sam3-trt artifact folder (or an export did not finish)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise Sam3TrtError(f"{path} is not valid JSON ({exc}); re-run the export") from None
    if data.get("format") != FORMAT:
        raise Sam3TrtError(f"{path} has format {data.get('format')!r}, this sam3-trt reads format {FORMAT}; re-export")
    if kind is not None and data.get("kind") != kind:
        raise Sam3TrtError(f"{folder} holds {data.get('kind')!r} artifacts, expected {kind!r}")
    return data


def graph_sources(manifest: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """What a derived folder (FP16, INT8) records of the export it was made from: per graph, the sha256
    of the ``.onnx`` file and of its external data. The data's hash matters: exports are byte-reproducible,
    so a random-weight and a checkpoint export of one architecture share the ``.onnx`` file.
    """
    return {
        name: {"sha256": g["sha256"], "data_sha256": g.get("data_sha256")} for name, g in manifest["graphs"].items()
    }


def verify_files(folder: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Check every graph file (and its external data) against the sha256 in the manifest.

    Raises:
        Sam3TrtError: naming the file that is missing, truncated or changed.
    """
    from .export.model import sha256_file

    folder = Path(folder)
    for name, entry in manifest.get("graphs", {}).items():
        for key_file, key_hash in (("file", "sha256"), ("data_file", "data_sha256")):
            if key_file not in entry:
                continue
            path = folder / entry[key_file]
            if not path.is_file():
                raise Sam3TrtError(f"{name}: {path} is missing; re-run the export")
            if sha256_file(path) != entry[key_hash]:
                raise Sam3TrtError(
                    f"{name}: {path} does not match its manifest sha256 (truncated or modified); re-run the export"
                )


def make_staging(out_dir: str | os.PathLike[str]) -> Path:
    """Hidden staging folder beside ``out_dir``: artifacts are written there and published only when complete.

    Raises:
        Sam3TrtError: ``out_dir``'s parent cannot be created or written.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as exc:
        raise Sam3TrtError(
            f"cannot write to output folder {out_dir} ({exc.strerror or exc}); choose a writable --out"
        ) from None
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the published folder gets normal permissions
    return staging


def publish(staging: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Replace ``out_dir`` (if any) by the finished ``staging`` folder."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
