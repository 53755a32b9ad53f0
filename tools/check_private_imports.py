"""Fail on an import of another stage's underscored name (``make lint``).

A stage is a top-level subpackage of ``sam3_trt`` (``export``, ``engines``, ``runtime``, ``video`` ...); the
top-level modules are the shared core. Within a stage any name may be imported; across stages only public
names: ``from ..export.tracker_model import _grid_pos`` in ``sam3_trt/video/`` fails, naming the file, the line
and the fix. Modules are found with :mod:`ast` (no imports are run), so the check needs only the standard library.

Usage: ``python tools/check_private_imports.py [PACKAGE_DIR]`` (default: ``sam3_trt`` beside this folder).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def stage_of(module: list[str]) -> str:
    """The stage of a module path (``["sam3_trt", "video", "tracker"]`` -> ``video``); ``""`` for the shared core."""
    return module[1] if len(module) > 2 else ""


def module_parts(path: Path, root: Path) -> list[str]:
    """``sam3_trt/video/tracker.py`` -> ``["sam3_trt", "video", "tracker"]`` (a package's ``__init__`` -> the package)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def resolve(node: ast.ImportFrom, module: list[str], is_package: bool) -> list[str]:
    """The absolute module an ``ImportFrom`` names."""
    if node.level == 0:
        return (node.module or "").split(".")
    base = module if is_package else module[:-1]
    base = base[: len(base) - (node.level - 1)]
    return base + (node.module.split(".") if node.module else [])


def violations(root: Path) -> list[str]:
    """Every cross-stage import of an underscored name below ``root`` (the ``sam3_trt`` folder), one line each."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_parts(path, root)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = resolve(node, module, path.name == "__init__.py")
            if not target or target[0] != root.name:
                continue
            for alias in node.names:
                private = [p for p in [*target[1:], alias.name] if p.startswith("_") and not p.startswith("__")]
                # the stage that owns the name: the package it is imported from, or for "from sam3_trt import
                # export" the subpackage itself
                owner = target[1] if len(target) > 1 else (alias.name if (root / alias.name).is_dir() else "")
                imported = [*target, alias.name]
                if private and owner != stage_of(module):
                    found.append(
                        f"{path}:{node.lineno}: imports {'.'.join(imported)}, a private name of stage "
                        f"{owner or 'core'!r} from stage {stage_of(module) or 'core'!r}: make it public (no underscore, "
                        "with a docstring) in the module that owns it"
                    )
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "sam3_trt"
    found = violations(root.resolve())
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(f"{len(found)} cross-stage private import(s)", file=sys.stderr)
        return 1
    print(f"no cross-stage private imports in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
