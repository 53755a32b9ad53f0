"""Output paths: refused before any work starts, in one line naming the option and the fix; reports written there."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import Sam3TrtError


def check_output_file(path: Path | None, option: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse an output file before any work starts: one line naming the option, the path and the fix.

    Args:
        path: The file to be written (``None``: not asked for).
        option: The option that named it (``--json``).
        suffixes: Accepted suffixes, when the format follows the suffix.
    """
    if path is None:
        return
    if path.is_dir():
        raise Sam3TrtError(
            f"{option} {path} is a folder; give a file name inside it, e.g. {path / ('out' + (suffixes or ('.json',))[0])}"
        )
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise Sam3TrtError(f"{option} {path}: the suffix picks the format; use one of {', '.join(suffixes)}")
    check_output_folder(path.parent, option, create=False)


def check_output_folder(folder: Path, option: str, create: bool = True) -> None:
    """Refuse a folder that cannot be written (created when missing and ``create``), before any work starts.

    Args:
        folder: The folder to write in.
        option: The option that named it (``--out``).
        create: Create it (with its parents) when missing.
    """
    import tempfile

    if create and not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise Sam3TrtError(
                f"{option}: cannot create folder {folder} ({exc.strerror or exc}); choose a writable place"
            ) from None
    if not folder.is_dir():
        raise Sam3TrtError(f"{option}: folder {folder} does not exist; create it or choose another path")
    try:  # permissions alone do not tell (root, read-only mounts, sysfs): try it
        with tempfile.TemporaryFile(dir=folder, prefix=".sam3-trt-write-check-"):
            pass
    except OSError as exc:
        raise Sam3TrtError(
            f"{option}: cannot write in {folder} ({exc.strerror or exc}); choose a writable folder"
        ) from None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename: a reader, or a run resumed
    after a crash, finds all of it or nothing (the temporary file is ``.NAME.PID.tmp``, hidden)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path | None, data: Any) -> None:
    """Write a report to ``path`` (indented, one trailing newline) when one was asked for; checked beforehand with
    :func:`check_output_file`."""
    if path is not None:
        path.write_text(json.dumps(data, indent=2) + "\n")
