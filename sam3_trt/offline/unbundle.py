"""Install a sam3-trt offline bundle on a machine without network (standard library only; copied into bundles).

Usage: ``python3 unbundle.py SITE_DIR [FOLDER ...]``. The folders (default: the ``callN/`` folders beside this
file) hold the bundle's files and parts; parts are joined, every file is checked against the sha256 in
``bundle.json``, and the wheels are installed with ``pip install --no-index --no-deps --target SITE_DIR``.
Then ``export PYTHONPATH=SITE_DIR``. Exit 2 with one line when a file is missing or damaged.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (``bundle.py`` records with it, this file checks with it)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _find(name: str, folders: list[Path]) -> Path:
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    _fail(f"{name} is in none of {[str(f) for f in folders]}; bring every callN/ folder")
    raise AssertionError  # unreachable


def unbundle(site: Path, folders: list[Path], manifest_path: Path) -> list[str]:
    """Reassemble, verify and install; returns the wheel names installed."""
    manifest = json.loads(manifest_path.read_text())
    with tempfile.TemporaryDirectory(prefix="sam3trt-unbundle-") as tmp:
        wheels = []
        for entry in manifest["files"]:
            target = Path(tmp) / entry["file"]
            if entry["parts"]:
                with target.open("wb") as out:
                    for part in entry["parts"]:
                        path = _find(part["file"], folders)
                        if sha256_file(path) != part["sha256"]:
                            _fail(f"{path} is damaged (sha256 differs); copy it again")
                        out.write(path.read_bytes())
            else:
                target.write_bytes(_find(entry["file"], folders).read_bytes())
            if sha256_file(target) != entry["sha256"]:
                _fail(f"{entry['file']} does not match bundle.json after reassembly; copy it again")
            wheels.append(str(target))
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), *wheels]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            _fail(f"pip could not install the bundle: {proc.stderr.strip().splitlines()[-1:]}")
    return [Path(w).name for w in wheels]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        _fail("usage: python3 unbundle.py SITE_DIR [FOLDER ...]")
    here = Path(__file__).resolve().parent
    folders = [Path(a) for a in args[1:]] or sorted(here.glob("call*"))
    names = unbundle(Path(args[0]), [*folders, here], here / "bundle.json")
    print(f"installed {len(names)} wheels into {args[0]}: export PYTHONPATH={Path(args[0]).resolve()}")


if __name__ == "__main__":
    main()
