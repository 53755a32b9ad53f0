"""What a labelling run reads: the image list, the prompts, and per-image prompts and boxes.

Every input is checked before any image is decoded, each problem in one line naming the input, the bad value
and the fix. The image list has one canonical order (sorted relative paths, or a COCO file's ids): image ids,
shards and outputs follow it, so a resumed or distributed run writes what an uninterrupted one writes.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import Sam3TrtError

#: File suffixes a folder or glob source picks up (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One image of a run.

    Args:
        image_id: COCO image id (1-based canonical position, or the id a COCO source gave).
        path: Where the file is read from.
        file_name: The name outputs use (relative to the source's root).
    """

    image_id: int
    path: str
    file_name: str


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """What runs on one image: its prompts, their category ids, and its pixel boxes ``(x0, y0, x1, y1, positive)``."""

    item: ImageItem
    prompts: tuple[str, ...]
    category_ids: tuple[int, ...]
    boxes: tuple[tuple[float, float, float, float, bool], ...] = ()


def collect_images(source: str | Path, image_root: str | Path | None = None) -> list[ImageItem]:
    """The images of ``source`` in canonical order.

    Args:
        source: A folder (searched recursively), a glob pattern (``'photos/**/*.jpg'``), a text file of paths
            (one per line, relative to the file's folder; ``#`` starts a comment) or a COCO JSON with ``images``.
        image_root: Folder the COCO file's ``file_name`` entries are relative to (default: the JSON's folder).

    Raises:
        Sam3TrtError: the source does not exist, holds no image, lists a file twice or a missing file.
    """
    text = str(source)
    path = Path(text)
    if any(c in text for c in "*?[") and not path.exists():
        root = Path(glob_root(text))
        files = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
        items = _sorted_items(files, root)
        where = f"glob {text!r}"
    elif path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        items = _sorted_items(files, path)
        where = f"folder {path}"
    elif path.is_file() and path.suffix.lower() == ".json":
        items = _coco_items(path, Path(image_root) if image_root else path.parent)
        where = f"COCO file {path}"
    elif path.is_file():
        items = _list_items(path)
        where = f"list {path}"
    else:
        raise Sam3TrtError(
            f"images {text}: no such folder, file or matching glob; give a folder, a glob, a .txt list or a COCO .json"
        )
    if not items:
        raise Sam3TrtError(f"{where} holds no image (suffixes {', '.join(IMAGE_SUFFIXES)}); check the path")
    return items


def glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (what ``file_name`` entries are relative to)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _sorted_items(files: list[Path], root: Path) -> list[ImageItem]:
    names = sorted((p.relative_to(root).as_posix(), p) for p in files)
    return [ImageItem(i + 1, str(p), name) for i, (name, p) in enumerate(names)]


def _list_items(path: Path) -> list[ImageItem]:
    items, seen = [], {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry in seen:
            raise Sam3TrtError(f"{path}:{number}: {entry} is listed twice (first on line {seen[entry]}); list it once")
        seen[entry] = number
        file = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        items.append(ImageItem(len(items) + 1, str(file), entry))
    return items


def _coco_items(path: Path, root: Path) -> list[ImageItem]:
    try:
        data = json.loads(path.read_text())
        images = data["images"]
        entries = [(int(im["id"]), str(im["file_name"])) for im in images]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise Sam3TrtError(
            f"COCO file {path}: cannot read its images ({type(exc).__name__}: {exc}); it needs "
            '"images": [{"id": int, "file_name": str}, ...]'
        ) from None
    ids = [i for i, _ in entries]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise Sam3TrtError(f"COCO file {path}: image ids {twice} appear more than once; ids must be unique")
    return [ImageItem(i, str(root / name), name) for i, name in sorted(entries)]


def read_prompts(prompts: Sequence[str] = (), prompts_file: str | Path | None = None) -> list[str]:
    """The run's prompts: ``prompts`` then the file's lines (blank lines and ``#`` comments skipped), each once.

    Raises:
        Sam3TrtError: the file is missing, or a prompt is empty.
    """
    found = [str(p).strip() for p in prompts]
    if any(not p for p in found):
        raise Sam3TrtError("--prompt '': prompts must be non-empty text")
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise Sam3TrtError(f"--prompts {path}: no such file; give a text file with one prompt per line")
        found += [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return list(dict.fromkeys(p for p in found if p))


def read_per_image(
    path: str | Path, items: Sequence[ImageItem]
) -> dict[int, tuple[list[str], list[tuple[float, float, float, float, bool]]]]:
    """Per-image prompts and boxes from a JSONL file: ``{"image": NAME, "prompts": [...], "boxes": [[x0, y0, x1, y1
    (, "neg")], ...]}`` per line, ``NAME`` a ``file_name`` or path of the run's images.

    Returns:
        ``{image_id: (prompts, boxes)}``.

    Raises:
        Sam3TrtError: the file is missing, a line is not JSON, names an unknown image or holds a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise Sam3TrtError(f"--per-image {path}: no such file; give a JSONL file, one image per line")
    by_name = {it.file_name: it.image_id for it in items} | {it.path: it.image_id for it in items}
    found: dict[int, tuple[list[str], list[tuple[float, float, float, float, bool]]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"--per-image {path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise Sam3TrtError(f"{where}: not JSON ({exc.msg}); one object per line") from None
        if not isinstance(entry, dict) or "image" not in entry:
            raise Sam3TrtError(f'{where}: needs {{"image": NAME, "prompts": [...], "boxes": [...]}}')
        image_id = by_name.get(str(entry["image"]))
        if image_id is None:
            raise Sam3TrtError(f"{where}: image {entry['image']!r} is not among the run's images; use its file name")
        if image_id in found:
            raise Sam3TrtError(f"{where}: image {entry['image']!r} appears twice; give one line per image")
        prompts = entry.get("prompts", [])
        if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise Sam3TrtError(f"{where}: prompts must be a list of non-empty strings, got {prompts!r}")
        found[image_id] = ([p.strip() for p in prompts], [_box(b, where) for b in entry.get("boxes", [])])
    return found


def _box(value: Any, where: str) -> tuple[float, float, float, float, bool]:
    ok = isinstance(value, list) and len(value) in (4, 5)
    if ok and len(value) == 5 and value[4] not in ("neg", "pos"):
        ok = False
    try:
        x0, y0, x1, y1 = (float(v) for v in value[:4]) if ok else (math.nan,) * 4
    except (TypeError, ValueError):
        x0 = y0 = x1 = y1 = math.nan
    if not ok or not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise Sam3TrtError(f'{where}: box {value!r} must be [x0, y0, x1, y1] in pixels, optionally with "neg"')
    if not (x1 > x0 and y1 > y0):
        raise Sam3TrtError(f"{where}: box {value!r} needs x1 > x0 and y1 > y0 (top-left then bottom-right)")
    return (x0, y0, x1, y1, not (len(value) == 5 and value[4] == "neg"))


def plan_tasks(
    items: Sequence[ImageItem],
    prompts: Sequence[str],
    per_image: dict[int, tuple[list[str], list[tuple[float, float, float, float, bool]]]] | None = None,
) -> tuple[list[ImageTask], list[str]]:
    """Each image's prompts and boxes, and the categories (every prompt once: the run's, then per-image ones).

    An image with a per-image line runs its own prompts (the run's when its list is empty) and boxes.

    Raises:
        Sam3TrtError: an image has no prompt and no box.
    """
    per_image = per_image or {}
    categories = list(dict.fromkeys([*prompts, *(p for ps, _ in per_image.values() for p in ps)]))
    ids = {p: i + 1 for i, p in enumerate(categories)}
    tasks = []
    for item in items:
        own, boxes = per_image.get(item.image_id, ([], []))
        chosen = own or list(prompts)
        if not chosen:
            raise Sam3TrtError(
                f"image {item.file_name} has no prompt: give --prompt/--prompts for every image or list its prompts "
                "in --per-image"
            )
        tasks.append(ImageTask(item, tuple(chosen), tuple(ids[p] for p in chosen), tuple(boxes)))
    return tasks, categories


def tasks_digest(tasks: Sequence[ImageTask], categories: Sequence[str]) -> str:
    """sha256 of the work a run does (images, names, prompts, boxes, categories): a re-run must match it."""
    h = hashlib.sha256(json.dumps(list(categories)).encode())
    for t in tasks:
        h.update(json.dumps([t.item.image_id, t.item.file_name, t.category_ids, t.boxes]).encode())
    return h.hexdigest()
