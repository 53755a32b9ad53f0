"""A drawn image set for the dataset tests: varied sizes and layouts, and files no decoder can use."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Files of the drawn set that must land in errors.jsonl (not images, or cut short).
BAD_IMAGES = ("broken/empty.png", "broken/not-an-image.jpg", "broken/truncated.png")


def draw_image_set(root: Path, count: int = 20) -> Path:
    """``count`` images (RGB, grayscale, RGBA, 16-bit, sizes from 40 px to 400 px, in subfolders) plus
    :data:`BAD_IMAGES`; each image holds a few bright rectangles on a dark ground."""
    from PIL import Image

    rng = np.random.default_rng(7)
    for i in range(count):
        height, width = int(rng.integers(40, 400)), int(rng.integers(40, 400))
        rgb = np.full((height, width, 3), rng.integers(0, 60, 3), np.uint8)
        for _ in range(3):
            y, x = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
            rgb[y : y + int(rng.integers(8, height // 2 + 9)), x : x + int(rng.integers(8, width // 2 + 9))] = (
                rng.integers(90, 256, 3)
            )
        folder = root / ("a" if i % 3 == 0 else "b/c" if i % 3 == 1 else "")
        folder.mkdir(parents=True, exist_ok=True)
        kind = i % 4
        if kind == 0:
            Image.fromarray(rgb).save(folder / f"img{i:02d}.png")
        elif kind == 1:
            Image.fromarray(rgb.mean(axis=2).astype(np.uint8), "L").save(folder / f"img{i:02d}_gray.png")
        elif kind == 2:
            rgba = np.concatenate([rgb, np.full((height, width, 1), 128, np.uint8)], axis=2)
            Image.fromarray(rgba, "RGBA").save(folder / f"img{i:02d}_rgba.png")
        else:
            Image.fromarray(rgb).save(folder / f"img{i:02d}.jpg", quality=95)
    (root / "broken").mkdir()
    (root / BAD_IMAGES[0]).write_bytes(b"")
    (root / BAD_IMAGES[1]).write_text("this is not a JPEG")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 50).save(root / "full.png")
    data = (root / "full.png").read_bytes()
    (root / BAD_IMAGES[2]).write_bytes(data[: len(data) // 2])
    (root / "full.png").unlink()
    (root / "notes.txt").write_text("not picked up: not an image suffix")
    return root
