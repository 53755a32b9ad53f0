"""PNG charts drawn with Pillow (no plotting dependency): bench bar charts and parity panels.

Masks are drawn with :mod:`sam3_trt.runtime.draw` (outlines over a light fill, a stamp when the weights are
random), so a figure says something whatever the masks are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..runtime.draw import font, outline, stamp

#: One colour per series (backend), distinct on white.
SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike[str],
    title: str,
    unit: str = "ms",
    subtitle: str = "",
    linear_max: float | None = None,
    digits: int = 1,
) -> None:
    """Horizontal grouped bars on a log scale (stage times span 1 ms to a minute), values printed.

    Args:
        groups: Row labels (stages).
        series: ``{name: one value per group}`` (``None``: not measured).
        path: PNG to write.
        title: Title line.
        unit: Value unit for labels.
        subtitle: Second line (the machine).
        linear_max: A linear scale from 0 to this value instead (scores such as AP in [0, 1]).
        digits: Decimals of the printed values on the log scale.
    """
    from PIL import Image, ImageDraw

    names = list(series)
    row_h, bar_h, left, right, top = 12 * len(names) + 10, 12, 130, 90, 56
    width, height = 900, top + row_h * len(groups) + 20 + 16 * len(names)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill="black", font=font(14))
    draw.text((10, 28), subtitle, fill=(60, 60, 60), font=font(12))
    values = [v for vs in series.values() for v in vs if v is not None and v > 0]
    lo = math.log10(min(values)) - 0.2 if values else 0.0
    hi = math.log10(max(values)) + 0.1 if values else 1.0
    span = max(hi - lo, 1e-6)
    plot_w = width - left - right
    for g, group in enumerate(groups):
        y0 = top + g * row_h
        draw.text((10, y0 + row_h // 2 - 6), group, fill="black")
        for s, name in enumerate(names):
            value = series[name][g]
            y = y0 + 4 + s * bar_h
            if value is None or (value <= 0 and linear_max is None):
                draw.text((left + 2, y), "-", fill="gray")
                continue
            if linear_max is not None:
                length, label = max(2, int(plot_w * min(value, linear_max) / linear_max)), f"{value:.3f} {unit}"
            else:
                length, label = max(2, int(plot_w * (math.log10(value) - lo) / span)), f"{value:.{digits}f} {unit}"
            draw.rectangle([left, y, left + length, y + bar_h - 2], fill=SERIES_COLOURS[s % len(SERIES_COLOURS)])
            draw.text((left + length + 4, y - 1), label, fill="black")
    legend_y = top + row_h * len(groups) + 6
    for s, name in enumerate(names):
        y = legend_y + 16 * s
        draw.rectangle([left, y, left + 12, y + 10], fill=SERIES_COLOURS[s % len(SERIES_COLOURS)])
        draw.text((left + 18, y - 1), name if linear_max is not None else f"{name} (log scale)", fill="black")
    img.save(path)


def masks_over_image(image_rgb: np.ndarray, masks: Sequence[np.ndarray], fill: float = 0.2) -> np.ndarray:
    """``image_rgb`` with each mask's outline in its own colour over a light fill (one tint per pixel)."""
    out = image_rgb.astype(np.float32).copy()
    h, w = out.shape[:2]
    owner = np.full((h, w), -1, np.int64)
    for i in reversed(range(len(masks))):
        owner[np.asarray(masks[i], bool)] = i
    palette = np.array([SERIES_COLOURS[i % len(SERIES_COLOURS)] for i in range(max(1, len(masks)))], np.float32)
    tinted = owner >= 0
    out[tinted] = (1 - fill) * out[tinted] + fill * palette[owner[tinted]]
    line = max(1, round(min(h, w) / 250))
    for i in reversed(range(len(masks))):
        out[outline(masks[i], line)] = palette[i]
    return out.clip(0, 255).astype(np.uint8)


#: Colour scale of difference maps: black (0) -> purple -> orange -> yellow (the maximum).
_RAMP = np.array([(0, 0, 0), (90, 20, 140), (230, 90, 40), (255, 240, 80)], np.float32)


def colour_scale(values: np.ndarray, vmax: float) -> np.ndarray:
    """``values`` in ``[0, vmax]`` as RGB on :data:`_RAMP` (uint8)."""
    t = np.clip(np.asarray(values, np.float32) / max(vmax, 1e-30), 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(t).astype(np.int64).clip(0, len(_RAMP) - 2)
    frac = (t - lo)[..., None]
    return ((1 - frac) * _RAMP[lo] + frac * _RAMP[lo + 1]).astype(np.uint8)


def parity_panels(
    data: Any,
    path: str | os.PathLike[str],
    titles: tuple[str, str] = ("reference", "candidate"),
    random_weights: bool = False,
) -> None:
    """Three panels for one parity case: each side's kept masks as outlines over the image, and the largest
    difference of their mask probabilities with its colour scale.

    Args:
        data: :class:`sam3_trt.checks.detection_parity.FigureData`.
        path: PNG to write.
        titles: Names of the two sides.
        random_weights: Stamp "random weights: masks are meaningless".
    """
    from PIL import Image, ImageDraw

    image = data.image
    base = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)
    h, w = base.shape[:2]
    differ = int(np.logical_xor(_union(data.reference_masks, (h, w)), _union(data.candidate_masks, (h, w))).sum())
    vmax = float(data.difference.max()) if data.difference.size else 0.0
    panels = [
        (masks_over_image(base, data.reference_masks), f"{titles[0]}: {len(data.reference_masks)} masks"),
        (masks_over_image(base, data.candidate_masks), f"{titles[1]}: {len(data.candidate_masks)} masks"),
        (colour_scale(data.difference, vmax), f"max |p_ref - p_cand| = {vmax:.2g}; {differ} px differ"),
    ]
    size, head, scale_h = parity_layout(h, w)
    canvas = Image.new("RGB", (3 * w + 20, head + h + scale_h), "white")
    draw = ImageDraw.Draw(canvas)
    prompt = f"prompt '{data.prompt}'" if data.prompt else "boxes only"
    draw.text((4, 2), f"parity {data.case}, {prompt}", fill="black", font=font(size))
    for i, (panel, label) in enumerate(panels):
        x = i * (w + 10)
        canvas.paste(Image.fromarray(panel), (x, head))
        draw.text((x + 4, size + 8), label, fill="black", font=font(max(10, size - 2)))
    # the colour scale under the difference panel, 0 to its maximum
    x0, y0 = 2 * (w + 10), head + h + 4
    ramp = colour_scale(np.linspace(0, 1, w)[None, :].repeat(10, 0), 1.0)
    canvas.paste(Image.fromarray(ramp), (x0, y0))
    draw.text((x0, y0 + 11), "0", fill="black", font=font(max(10, size - 4)))
    right = f"{vmax:.2g}"
    tw = draw.textlength(right, font=font(max(10, size - 4)))
    draw.text((x0 + w - tw, y0 + 11), right, fill="black", font=font(max(10, size - 4)))
    if random_weights:
        stamp(canvas)
    canvas.save(path)


def parity_layout(height: int, width: int) -> tuple[int, int, int]:
    """Font size, title height above the panels and colour-scale height below them, for an image size."""
    size = max(12, min(height, width) // 30)
    return size, size * 2 + 12, size + 22


def _union(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    for m in masks:
        out |= np.asarray(m, bool)
    return out
