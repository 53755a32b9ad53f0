"""Deterministic test and demo images drawn in code (no licence question, no download)."""

from __future__ import annotations

from typing import Any


def demo_image(width: int = 640, height: int = 480, variant: int = 0, shift: float | None = None) -> Any:
    """A synthetic RGB scene: gradient background, a red square, a blue disc, a green triangle.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        variant: Shifts the shapes, so several distinct images can be made.
        shift: Horizontal shift in pixels (instead of the one ``variant`` picks): the square moves right,
            the disc left, the triangle's tip by half.

    Returns:
        A ``PIL.Image.Image`` in mode ``RGB``.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:height, 0:width]
    bg = np.stack(
        [80 + 100 * xx / max(width - 1, 1), 90 + 80 * yy / max(height - 1, 1), np.full_like(xx, 140, dtype=float)],
        axis=-1,
    ).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    s = min(width, height)
    dx = (variant * 37) % max(width // 4, 1) if shift is None else shift
    draw.rectangle(
        [0.10 * width + dx, 0.15 * height, 0.10 * width + dx + 0.3 * s, 0.15 * height + 0.3 * s], fill=(220, 30, 30)
    )
    cx, cy, r = 0.68 * width - dx, 0.55 * height, 0.18 * s
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(30, 60, 220))
    draw.polygon(
        [(0.2 * width, 0.92 * height), (0.45 * width, 0.92 * height), (0.32 * width + dx / 2, 0.6 * height)],
        fill=(40, 180, 60),
    )
    return img


def demo_clip(frames: int = 6, width: int = 320, height: int = 240, step: float = 6.0) -> list[Any]:
    """A drawn video clip: :func:`demo_image` with its shapes moving ``step`` pixels per frame.

    Args:
        frames: Number of frames.
        width: Frame width in pixels.
        height: Frame height in pixels.
        step: Pixels the square moves right (and the disc left) per frame.

    Returns:
        ``PIL.Image.Image`` frames in mode ``RGB``.
    """
    return [demo_image(width, height, shift=f * step) for f in range(frames)]
