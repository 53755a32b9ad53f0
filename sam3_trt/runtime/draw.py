"""Overlays drawn with Pillow: mask outlines over a light fill, labelled boxes, dashed prompt boxes, a stamp.

Every overlay must say something whatever the masks are: with random weights every mask covers the whole
image, so masks are drawn as outlines over a light fill (the image stays visible), labels sit on their own
background inside the image, and a stamp says when the weights are random. ``segment``, ``track`` and the
parity panels of :mod:`sam3_trt.checks.figures` draw with these.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Stamped on figures made with random weights.
RANDOM_WEIGHTS_STAMP = "random weights: masks are meaningless"
#: Background of the stamp (tests find it by this colour).
STAMP_COLOUR = (180, 0, 0)


def font(size: int) -> Any:
    """Pillow's scalable default font at ``size`` pixels (the bitmap font when FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` pixels of its edge (the image border counts as an edge)."""
    inner = np.asarray(mask, bool)
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.asarray(mask, bool) & ~inner


def draw_label(
    draw: Any, xy: tuple[float, float], text: str, colour: tuple[int, int, int], size: int, bounds: tuple[int, int]
) -> None:
    """``text`` on a filled background of ``colour``, placed at ``xy`` and moved inside ``bounds`` (w, h)."""
    f = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=f)
    tw, th = right - left + 6, bottom - top + 4
    x = min(max(0, int(xy[0])), max(0, bounds[0] - tw))
    y = min(max(0, int(xy[1])), max(0, bounds[1] - th))
    draw.rectangle([x, y, x + tw, y + th], fill=colour)
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    draw.text((x + 3 - left, y + 2 - top), text, fill="black" if luma > 140 else "white", font=f)


def stamp(image: Any, text: str = RANDOM_WEIGHTS_STAMP) -> None:
    """A banner across the bottom of ``image`` (a PIL image, drawn in place)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    size = max(12, image.height // 28)
    draw_label(draw, (0, image.height), text, STAMP_COLOUR, size, image.size)


def dashed_rectangle(draw: Any, box: Sequence[float], colour: tuple[int, int, int], width: int, dash: int = 8) -> None:
    """A rectangle of alternating ``colour`` and black dashes (prompt boxes, told apart from detections)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for i in range(steps):
            t0, t1 = i / steps, (i + 1) / steps
            seg = [ax + (bx - ax) * t0, ay + (by - ay) * t0, ax + (bx - ax) * t1, ay + (by - ay) * t1]
            draw.line(seg, fill=colour if i % 2 == 0 else (0, 0, 0), width=width)


def object_colour(i: int) -> tuple[int, int, int]:
    """The ``i``-th of a sequence of distinct, bright colours (golden-ratio hue steps): one per rank or object ID."""
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def pixel_box(box: Sequence[float], width: int, height: int) -> list[float]:
    """Normalised ``cx, cy, w, h`` -> pixel ``x0, y0, x1, y1``."""
    cx, cy, w, h = box
    return [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]


def render_overlay(
    image_rgb: np.ndarray,
    detections: Sequence[dict[str, Any]],
    prompt_boxes: Sequence[tuple[Sequence[float], bool]] = (),
    max_detections: int = 10,
    random_weights: bool = False,
    fill: float = 0.25,
) -> Any:
    """The image with the best detections: mask outlines over a light fill, clipped boxes, labelled scores.

    Args:
        image_rgb: ``HxWx3`` uint8 input image.
        detections: ``[{"prompt", "score", "box" (pixel xyxy), "mask" (bool HxW)}]``, each optionally with
            an RGB ``"colour"`` (tracks keep one colour per object ID; otherwise colours follow rank).
        prompt_boxes: The user's box prompts, pixel ``x0, y0, x1, y1`` and positive?, drawn dashed
            (white: positive, red: negative).
        max_detections: Draw at most this many, best score first.
        random_weights: Stamp "random weights: masks are meaningless" across the bottom.
        fill: Opacity of the mask fill (the outline is opaque): the image stays visible under masks.

    Returns:
        A PIL image.
    """
    from PIL import Image, ImageDraw

    height, width = image_rgb.shape[:2]
    shown = sorted(detections, key=lambda d: -d["score"])[: max(0, max_detections)]
    colours = [tuple(d["colour"]) if "colour" in d else object_colour(i) for i, d in enumerate(shown)]
    line = max(2, round(min(height, width) / 250))
    canvas = image_rgb.astype(np.float32).copy()
    # one tint per pixel (the best detection covering it), so overlapping masks never bury the image
    owner = np.full((height, width), -1, np.int64)
    for i in reversed(range(len(shown))):
        owner[np.asarray(shown[i]["mask"], bool)] = i
    palette = np.array(colours, np.float32).reshape(-1, 3)
    tinted = owner >= 0
    canvas[tinted] = (1 - fill) * canvas[tinted] + fill * palette[owner[tinted]]
    for det, colour in reversed(list(zip(shown, colours, strict=True))):  # the best outline ends on top
        canvas[outline(det["mask"], line)] = colour
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(out)
    for box, positive in prompt_boxes:
        dashed_rectangle(draw, box, (255, 255, 255) if positive else (255, 60, 60), line)
    size = max(12, min(height, width) // 32)
    placed: list[tuple[int, int]] = []
    for det, colour in zip(shown, colours, strict=True):
        x0, y0, x1, y1 = det["box"]
        x0, x1 = (min(max(v, 0.0), width - 1.0) for v in (x0, x1))
        y0, y1 = (min(max(v, 0.0), height - 1.0) for v in (y0, y1))
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=line)
        # above the box when there is room, else inside its top; step down past labels already there
        y = y0 - size - 6 if y0 >= size + 6 else y0
        while any(abs(y - py) < size + 4 and abs(x0 - px) < 8 * size for px, py in placed):
            y += size + 6
        placed.append((int(x0), int(y)))
        draw_label(draw, (x0, y), f"{det['prompt']} {det['score']:.2f}", colour, size, (width, height))
    if random_weights:
        stamp(out)
    return out
