"""The main job: segment one image with text and box prompts, write an overlay PNG and a JSON of detections."""

from __future__ import annotations

import colorsys
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Sam3TrtError
from .runtime.arrays import to_numpy


def parse_box(text: str, width: int, height: int) -> tuple[list[float], bool]:
    """``"x0,y0,x1,y1[,neg]"`` in pixels of the input image -> (normalised cx, cy, w, h; positive?).

    Raises:
        Sam3TrtError: malformed, inverted, empty or outside the ``width x height`` image.
    """
    parts = [p.strip() for p in text.split(",")]
    positive = True
    if len(parts) == 5:
        if parts[4].lower() not in ("neg", "pos"):
            raise Sam3TrtError(f"--box {text!r}: the fifth field must be 'neg' or 'pos'")
        positive = parts[4].lower() == "pos"
        parts = parts[:4]
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise Sam3TrtError(f"--box {text!r}: expected x0,y0,x1,y1[,neg] in pixels") from None
    if not (x1 > x0 and y1 > y0):
        raise Sam3TrtError(f"--box {text!r}: needs x1 > x0 and y1 > y0 (pixels, top-left then bottom-right)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise Sam3TrtError(f"--box {text!r} lies outside the {width}x{height} image")
    cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    return [cx, cy, (x1 - x0) / width, (y1 - y0) / height], positive


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major run lengths starting with zeros); pycocotools reads it."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`."""
    height, width = rle["size"]
    values = np.zeros(height * width, dtype=bool)
    pos, value = 0, False
    for count in rle["counts"]:
        values[pos : pos + count] = value
        pos += count
        value = not value
    return values.reshape((height, width), order="F")


def _colour(i: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render_overlay(image_rgb: np.ndarray, detections: Sequence[dict[str, Any]], alpha: float = 0.5) -> Any:
    """Masks in distinct colours, boxes, and ``prompt score`` labels over the image (a PIL image)."""
    from PIL import Image, ImageDraw

    canvas = image_rgb.astype(np.float32).copy()
    for i, det in enumerate(detections):
        mask = det["mask"]
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.array(_colour(i), np.float32)
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(out)
    for i, det in enumerate(detections):
        x0, y0, x1, y1 = det["box"]
        draw.rectangle([x0, y0, x1, y1], outline=_colour(i), width=2)
        draw.text((x0 + 3, max(y0 - 12, 0)), f"{det['prompt']} {det['score']:.2f}", fill=_colour(i))
    return out


def segment(
    processor: Any,
    image: Any,
    prompts: Sequence[str],
    boxes: Sequence[tuple[list[float], bool]] = (),
) -> list[dict[str, Any]]:
    """Run text prompts (one decoder batch) and/or boxes on one image.

    Returns:
        ``[{"prompt", "score", "box" (pixel xyxy), "mask" (bool HxW)}]`` over all prompts.
    """
    from .runtime.processor import VISUAL_PROMPT, _check_box

    state = processor.set_image(image)
    if not prompts and not boxes:
        raise Sam3TrtError("give at least one --prompt or --box")
    checked = [(_check_box(b), bool(label)) for b, label in boxes]
    if prompts:
        state["geometric_prompt"] = checked
        results = processor.set_text_prompts(list(prompts), state)
    else:
        for box, label in checked:
            state = processor.add_geometric_prompt(box, label, state)
        results = [{"prompt": VISUAL_PROMPT, **{k: state[k] for k in ("masks", "boxes", "scores")}}]
    detections = []
    for res in results:
        masks, pixel_boxes, scores = (to_numpy(res[k]) for k in ("masks", "boxes", "scores"))
        for mask, box, score in zip(masks, pixel_boxes, scores, strict=True):
            detections.append(
                {"prompt": res["prompt"], "score": float(score), "box": [float(v) for v in box], "mask": mask[0]}
            )
    return detections


def write_outputs(
    image_rgb: np.ndarray,
    detections: Sequence[dict[str, Any]],
    output: Path,
    json_path: Path | None,
    info: dict[str, Any],
) -> None:
    """Write the overlay PNG and, when asked, the detections JSON (RLE masks)."""
    render_overlay(image_rgb, detections).save(output, format="PNG")
    if json_path is not None:
        payload = {
            **info,
            "detections": [
                {"prompt": d["prompt"], "score": d["score"], "box_xyxy": d["box"], "mask_rle": mask_to_rle(d["mask"])}
                for d in detections
            ],
        }
        json_path.write_text(json.dumps(payload, indent=1))
