"""The main job: segment one image with text and box prompts, write an overlay PNG and a JSON of detections."""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Sam3TrtError
from .rle import mask_to_rle, rle_to_mask  # noqa: F401  (rle_to_mask: read back what segment writes)
from .runtime.arrays import to_numpy

#: Overlay formats ``segment --output`` writes, by suffix.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def parse_box(text: str, width: int, height: int) -> tuple[list[float], bool]:
    """``"x0,y0,x1,y1[,neg]"`` in pixels of the input image -> (normalised cx, cy, w, h; positive?).

    Raises:
        Sam3TrtError: malformed, inverted, empty or outside the ``width x height`` image.
    """
    pixels, positive = parse_pixel_box(text)
    return pixel_box_to_prompt(pixels, width, height, f"--box {text!r}"), positive


def parse_pixel_box(text: str) -> tuple[list[float], bool]:
    """``"x0,y0,x1,y1[,neg|pos]"`` -> (pixel ``[x0, y0, x1, y1]``, positive?), fields checked, not the image.

    Raises:
        Sam3TrtError: not four numbers, or a fifth field other than neg/pos.
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
    return [x0, y0, x1, y1], positive


def pixel_box_to_prompt(box: Sequence[float], width: int, height: int, name: str) -> list[float]:
    """Pixel ``x0, y0, x1, y1`` -> normalised ``cx, cy, w, h`` for the processor.

    Args:
        box: The four pixel coordinates.
        width: Image width in pixels.
        height: Image height in pixels.
        name: How the caller names the box in errors (``"--box '1,2,3,4'"``, ``"boxes[0]"``).

    Raises:
        Sam3TrtError: not finite, inverted, empty or outside the ``width x height`` image.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    bad = [n for n, v in zip(("x0", "y0", "x1", "y1"), (x0, y0, x1, y1), strict=True) if not math.isfinite(v)]
    if bad:
        raise Sam3TrtError(f"{name}: {', '.join(bad)} is not a finite number; give pixel coordinates")
    if not (x1 > x0 and y1 > y0):
        raise Sam3TrtError(f"{name}: needs x1 > x0 and y1 > y0 (pixels, top-left then bottom-right)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise Sam3TrtError(f"{name} lies outside the {width}x{height} image")
    return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


def _colour(i: int) -> tuple[int, int, int]:
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

    from .figures import dashed_rectangle, draw_label, outline, stamp

    height, width = image_rgb.shape[:2]
    shown = sorted(detections, key=lambda d: -d["score"])[: max(0, max_detections)]
    colours = [tuple(d["colour"]) if "colour" in d else _colour(i) for i, d in enumerate(shown)]
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


def segment(
    processor: Any,
    image: Any,
    prompts: Sequence[str],
    boxes: Sequence[tuple[list[float], bool]] = (),
) -> tuple[list[dict[str, Any]], float]:
    """Encode one image, then :func:`detect` on it."""
    if not prompts and not boxes:
        raise Sam3TrtError("give at least one --prompt or --box")
    return detect(processor, processor.set_image(image), prompts, boxes)


def detect(
    processor: Any,
    state: dict,
    prompts: Sequence[str],
    boxes: Sequence[tuple[list[float], bool]] = (),
) -> tuple[list[dict[str, Any]], float]:
    """Run text prompts (one decoder batch) and/or boxes on an encoded image.

    Args:
        processor: A :class:`~sam3_trt.Sam3Processor`.
        state: From ``processor.set_image``; its prompts are replaced.
        prompts: Text prompts; every box applies to each of them.
        boxes: ``(normalised cx, cy, w, h; positive?)``; with no prompts they run alone (text ``"visual"``).

    Returns:
        ``([{"prompt", "prompt_index", "score", "box" (pixel xyxy), "mask" (bool HxW)}], best score)``: the
        detections over all prompts above the processor's threshold (``prompt_index`` -1 for boxes alone),
        and the best score of any query (kept or not), so a caller can say how far the threshold is from
        the nearest detection.
    """
    from .runtime.processor import VISUAL_PROMPT, _check_box, best_score

    if not prompts and not boxes:
        raise Sam3TrtError("give at least one prompt or box")
    checked = [(_check_box(b), bool(label)) for b, label in boxes]
    if prompts:
        state["geometric_prompt"] = checked
        results = processor.set_text_prompts(list(prompts), state)
        best = max(r["best_score"] for r in results)
    else:
        # the decoder sees every box at once: only the last add runs it
        processor.reset_all_prompts(state)
        state["geometric_prompt"] = checked[:-1]
        state = processor.add_geometric_prompt(*checked[-1], state)
        results = [{"prompt": VISUAL_PROMPT, **{k: state[k] for k in ("masks", "boxes", "scores")}}]
        best = best_score(state["_raw"])
    detections = []
    for index, res in enumerate(results):
        masks, pixel_boxes, scores = (to_numpy(res[k]) for k in ("masks", "boxes", "scores"))
        for mask, box, score in zip(masks, pixel_boxes, scores, strict=True):
            detections.append(
                {
                    "prompt": res["prompt"],
                    "prompt_index": index if prompts else -1,
                    "score": float(score),
                    "box": [float(v) for v in box],
                    "mask": mask[0],
                }
            )
    return detections, best


def write_outputs(
    image_rgb: np.ndarray,
    detections: Sequence[dict[str, Any]],
    output: Path,
    json_path: Path | None,
    info: dict[str, Any],
    prompt_boxes: Sequence[tuple[Sequence[float], bool]] = (),
    max_detections: int = 10,
) -> None:
    """Write the overlay (format from ``output``'s suffix) and, when asked, the detections JSON (RLE masks).

    Both hold the ``max_detections`` best detections; the JSON also records how many there were in all and
    ``info`` (prompts, boxes, threshold, backend, precision, weights).
    """
    height, width = image_rgb.shape[:2]
    random_weights = info.get("weights_kind") == "random"
    pixel_prompts = [(pixel_box(box, width, height), positive) for box, positive in prompt_boxes]
    image = render_overlay(image_rgb, detections, pixel_prompts, max_detections, random_weights)
    image.save(output, format=IMAGE_FORMATS.get(output.suffix.lower(), "PNG"))
    if json_path is not None:
        json_path.write_text(json.dumps(detections_json(detections, info, max_detections), indent=1))


def detections_json(detections: Sequence[dict[str, Any]], info: dict[str, Any], max_detections: int) -> dict[str, Any]:
    """The detections JSON: ``info``, counts and the ``max_detections`` best detections with RLE masks."""
    shown = sorted(detections, key=lambda d: -d["score"])[:max_detections]
    return {
        **info,
        "detections_total": len(detections),
        "detections_shown": len(shown),
        "detections": [
            {"prompt": d["prompt"], "score": d["score"], "box_xyxy": d["box"], "mask_rle": mask_to_rle(d["mask"])}
            for d in shown
        ],
    }
