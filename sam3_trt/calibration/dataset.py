"""Calibration sets: a folder of images plus a prompts file, sampled deterministically, hashed.

The set's sha256 covers every chosen image's bytes (with its file name) and the prompts, in order;
every artifact made from a set records it, so results can be traced to their data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Prompts of the generated default set (they name what the drawn images hold).
DEFAULT_PROMPTS = ("a red square", "blue disc", "green triangle", "a shape")


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Images and prompts for calibration.

    Args:
        images: Image files, in the order they run.
        prompts: Text prompts (every image runs with all of them, in one decoder batch).
        sha256: Hash of the chosen images' names and bytes plus the prompts.
        source: Where the set came from (for reports).
    """

    images: tuple[Path, ...]
    prompts: tuple[str, ...]
    sha256: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "images": [p.name for p in self.images],
            "prompts": list(self.prompts),
        }


def _hash(images: Sequence[Path], prompts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in images:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    digest.update("\n".join(prompts).encode())
    return digest.hexdigest()


def read_prompts(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Prompts file: one prompt per line; blank lines and ``#`` comments ignored.

    Raises:
        Sam3TrtError: missing, unreadable or empty file, or more prompts than the decoder batch allows.
    """
    from ..specs import SPECS

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Sam3TrtError(f"--prompts {path}: cannot read it as UTF-8 text ({exc})") from None
    prompts = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not prompts:
        raise Sam3TrtError(f"--prompts {path}: no prompts (write one text prompt per line)")
    limit = SPECS["decoder"].dim("P").max
    if len(prompts) > limit:
        raise Sam3TrtError(
            f"--prompts {path}: {len(prompts)} prompts, the decoder takes at most {limit}; trim the file"
        )
    return prompts


def load_set(
    images: str | os.PathLike[str],
    prompts: str | os.PathLike[str],
    limit: int | None = None,
    seed: int = 0,
) -> CalibrationSet:
    """A calibration set from a folder of images and a prompts file.

    Args:
        images: Folder of images (any of :data:`IMAGE_SUFFIXES`, not recursive).
        prompts: Prompts file (:func:`read_prompts`).
        limit: Use at most this many images, sampled with ``seed`` (kept in name order).
        seed: Sampling seed.

    Raises:
        Sam3TrtError: missing folder, no images, bad ``limit``.
    """
    folder = Path(images)
    if not folder.is_dir():
        raise Sam3TrtError(f"--images {folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise Sam3TrtError(f"--images {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if limit is not None:
        if limit < 1:
            raise Sam3TrtError(f"--limit {limit}: use a positive number of images")
        if limit < len(files):
            picked = np.random.default_rng(seed).choice(len(files), size=limit, replace=False)
            files = [files[i] for i in sorted(picked)]
    texts = read_prompts(prompts)
    return CalibrationSet(tuple(files), texts, _hash(files, texts), str(folder))


def default_set(
    folder: str | os.PathLike[str], count: int = 4, limit: int | None = None, seed: int = 0
) -> CalibrationSet:
    """Generate the default set into ``folder``: ``count`` drawn scenes of varied size, and prompts.

    Args:
        folder: Where to write ``images/`` and ``prompts.txt``.
        count: Number of images.
        limit: Use at most this many of them, sampled with ``seed`` (as :func:`load_set`).
        seed: Sampling seed for ``limit``.
    """
    from ..assets.images import demo_image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    sizes = ((640, 480), (480, 640), (800, 600), (512, 512), (1024, 768), (300, 400))
    for i in range(count):
        demo_image(*sizes[i % len(sizes)], variant=i).save(folder / "images" / f"scene{i:02d}.png")
    (folder / "prompts.txt").write_text("# generated default calibration prompts\n" + "\n".join(DEFAULT_PROMPTS) + "\n")
    chosen = load_set(folder / "images", folder / "prompts.txt", limit=limit, seed=seed)
    return dataclasses.replace(chosen, source=f"generated default set ({count} drawn images)")


def graph_feeds(cal: CalibrationSet, tokenizer_file: Path) -> list[dict[str, np.ndarray]]:
    """Encoder inputs per image: ``pixel_values`` (1 image), ``input_ids`` (all prompts), one box per prompt.

    Args:
        cal: The set.
        tokenizer_file: BPE vocabulary (from the export folder).
    """
    from ..runtime.image import open_image, preprocess
    from ..runtime.tokenizer import Tokenizer

    ids = Tokenizer(tokenizer_file)(list(cal.prompts))
    p = len(cal.prompts)
    boxes = {
        "boxes": np.tile(np.asarray([0.5, 0.5, 0.6, 0.6], np.float32), (p, 1, 1)),
        "box_labels": np.ones((p, 1), bool),
        "box_mask": np.zeros((p, 1), bool),
    }
    return [
        {"pixel_values": preprocess(open_image(path), use_torch=False), "input_ids": ids, **boxes}
        for path in cal.images
    ]
