"""PNG figures drawn with Pillow (no plotting dependency): bench bar charts and parity mask panels."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: One colour per series (backend), distinct on white.
SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike[str],
    title: str,
    unit: str = "ms",
) -> None:
    """Horizontal grouped bars on a log scale (stage times span 1 ms to a minute), values printed.

    Args:
        groups: Row labels (stages).
        series: ``{name: one value per group}`` (``None``: not measured).
        path: PNG to write.
        title: Title line.
        unit: Value unit for labels.
    """
    from PIL import Image, ImageDraw

    names = list(series)
    row_h, bar_h, left, right, top = 12 * len(names) + 10, 12, 130, 90, 40
    width, height = 820, top + row_h * len(groups) + 20 + 16 * len(names)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title, fill="black")
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
            if value is None or value <= 0:
                draw.text((left + 2, y), "-", fill="gray")
                continue
            length = max(2, int(plot_w * (math.log10(value) - lo) / span))
            draw.rectangle([left, y, left + length, y + bar_h - 2], fill=SERIES_COLOURS[s % len(SERIES_COLOURS)])
            draw.text((left + length + 4, y - 1), f"{value:.1f} {unit}", fill="black")
    legend_y = top + row_h * len(groups) + 6
    for s, name in enumerate(names):
        y = legend_y + 16 * s
        draw.rectangle([left, y, left + 12, y + 10], fill=SERIES_COLOURS[s % len(SERIES_COLOURS)])
        draw.text((left + 18, y - 1), f"{name} (log scale)", fill="black")
    img.save(path)


def mask_panels(
    image: Any,
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    path: str | os.PathLike[str],
    titles: tuple[str, str] = ("reference", "candidate"),
) -> None:
    """Three panels: reference masks, candidate masks (same colours), and their difference.

    The difference panel shows pixels in the union of either side's masks: white where only one side
    has them (red where only the reference, blue where only the candidate), dark where both agree.

    Args:
        image: The input image (PIL or ``HxWx3`` uint8).
        reference: Boolean ``HxW`` masks of the reference.
        candidate: Boolean ``HxW`` masks of the candidate (matched to ``reference`` by index).
        path: PNG to write.
        titles: Panel titles.
    """
    from PIL import Image, ImageDraw

    base = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)
    h, w = base.shape[:2]

    def overlay(masks: Sequence[np.ndarray]) -> np.ndarray:
        out = base.astype(np.float32) * 0.5
        for i, m in enumerate(masks):
            colour = np.array(SERIES_COLOURS[i % len(SERIES_COLOURS)], np.float32)
            out[np.asarray(m, bool)] = 0.4 * out[np.asarray(m, bool)] + 0.6 * colour
        return out.clip(0, 255).astype(np.uint8)

    ref_any = np.zeros((h, w), bool)
    cand_any = np.zeros((h, w), bool)
    for m in reference:
        ref_any |= np.asarray(m, bool)
    for m in candidate:
        cand_any |= np.asarray(m, bool)
    diff = np.zeros((h, w, 3), np.uint8)
    diff[ref_any & cand_any] = (60, 60, 60)
    diff[ref_any & ~cand_any] = (255, 40, 40)
    diff[~ref_any & cand_any] = (40, 40, 255)
    panels = [overlay(reference), overlay(candidate), diff]
    canvas = Image.new("RGB", (3 * w + 20, h + 24), "white")
    labels = [*titles, f"difference ({int((ref_any ^ cand_any).sum())} px differ)"]
    for i, (panel, label) in enumerate(zip(panels, labels, strict=True)):
        canvas.paste(Image.fromarray(panel), (i * (w + 10), 24))
        ImageDraw.Draw(canvas).text((i * (w + 10) + 4, 6), label, fill="black")
    canvas.save(path)
