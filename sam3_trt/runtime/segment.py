"""The main job: segment one image with text and box prompts, write an overlay PNG and a JSON of detections."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import Sam3TrtError
from ..rle import mask_to_rle, rle_to_mask
from ..specs import SPECS
from .arrays import to_numpy
from .draw import pixel_box, render_overlay

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
    return _signed_numbers(text, "--box", "x0,y0,x1,y1[,neg]", 4)


def parse_point(text: str, width: int, height: int) -> tuple[list[float], int]:
    """``"x,y[,neg|pos]"`` in pixels of the ``width x height`` image -> (``[x, y]``, label 1 or 0).

    Raises:
        Sam3TrtError: not two numbers, a third field other than neg/pos, not finite or outside the image.
    """
    (x, y), positive = _signed_numbers(text, "--point", "x,y[,neg]", 2)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise Sam3TrtError(f"--point {text!r}: x and y must be finite pixel coordinates")
    if not (0 <= x <= width and 0 <= y <= height):
        raise Sam3TrtError(f"--point {text!r} lies outside the {width}x{height} image")
    return [x, y], int(positive)


def _signed_numbers(text: str, option: str, form: str, count: int) -> tuple[list[float], bool]:
    """``count`` comma-separated numbers and an optional ``neg``/``pos`` field after them (default positive)."""
    parts = [p.strip() for p in text.split(",")]
    positive = True
    if len(parts) == count + 1:
        sign = parts[count].lower()
        if sign not in ("neg", "pos"):
            ordinal = {3: "third", 5: "fifth"}[count + 1]
            raise Sam3TrtError(f"{option} {text!r}: the {ordinal} field must be 'neg' or 'pos'")
        positive = sign == "pos"
        parts = parts[:count]
    try:
        if len(parts) != count:
            raise ValueError
        return [float(p) for p in parts], positive
    except ValueError:
        raise Sam3TrtError(f"{option} {text!r}: expected {form} in pixels") from None


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


class Detections(NamedTuple):
    """What :func:`detect` found: the best detections, the best score of any query and how many scored above
    the threshold in all (``total`` may exceed ``len(detections)`` when ``max_detections`` cut them)."""

    detections: list[dict[str, Any]]
    best_score: float
    total: int


def segment(
    processor: Any,
    image: Any,
    prompts: Sequence[str],
    boxes: Sequence[tuple[list[float], bool]] = (),
    max_detections: int | None = None,
    encode: Callable[[np.ndarray], Any] | None = None,
) -> Detections:
    """Encode one image, then :func:`detect` on it."""
    if not prompts and not boxes:
        raise Sam3TrtError("give at least one --prompt or --box")
    return detect(processor, processor.set_image(image), prompts, boxes, max_detections, encode)


def detect(
    processor: Any,
    state: dict,
    prompts: Sequence[str],
    boxes: Sequence[tuple[list[float], bool]] = (),
    max_detections: int | None = None,
    encode: Callable[[np.ndarray], Any] | None = None,
) -> Detections:
    """Run text prompts (decoder batches) and/or boxes on an encoded image, one full-size mask at a time.

    Memory is bounded whatever the threshold and the image size: each decoder batch keeps at most
    ``max_detections`` queries per prompt at the graphs' 288x288, the best ``max_detections`` over all
    prompts are kept after each batch, and only those are upsampled to the image's size, one by one (each
    passed to ``encode`` when given, so a caller that writes RLE never holds more than one full-size mask).

    Args:
        processor: A :class:`~sam3_trt.Sam3Processor` (its threshold applies).
        state: From ``processor.set_image``; its prompts are replaced.
        prompts: Text prompts; every box applies to each of them.
        boxes: ``(normalised cx, cy, w, h; positive?)``; with no prompts they run alone (text ``"visual"``).
        max_detections: Keep the best this many over all prompts (``None``: every detection).
        encode: Applied to each bool ``HxW`` mask; its result is stored as the detection's ``mask``.

    Returns:
        :class:`Detections`: ``[{"prompt", "prompt_index", "score", "box" (pixel xyxy), "mask"}]`` by score,
        best first (``prompt_index`` -1 for boxes alone), the best score of any query, kept or not (so a
        caller can say how far the threshold is from the nearest detection), and the count above the threshold.
    """
    from .postprocess import upsample_probs
    from .processor import VISUAL_PROMPT, check_box

    if not prompts and not boxes:
        raise Sam3TrtError("give at least one prompt or box")
    state["geometric_prompt"] = [(check_box(b), bool(label)) for b, label in boxes]
    state.pop("text_prompt", None)
    texts = list(prompts) or [VISUAL_PROMPT]
    chunk = SPECS["decoder"].dim("P").max
    best, total = 0.0, 0
    candidates: list[tuple[float, int, Any, Any]] = []  # (score, prompt index, pixel box, 288x288 logits)
    for start in range(0, len(texts), chunk):
        results = processor.set_text_prompts(texts[start : start + chunk], state, False, max_detections)
        for offset, res in enumerate(results):
            best, total = max(best, res["best_score"]), total + res["detections_total"]
            scores, pixel_boxes = to_numpy(res["scores"]), to_numpy(res["boxes"])
            for row in range(len(scores)):
                candidates.append((float(scores[row]), start + offset, pixel_boxes[row], res["low_res_masks"][row]))
        candidates.sort(key=lambda c: -c[0])  # stable: equal scores keep prompt and query order
        del candidates[max_detections or len(candidates) :]
    detections = []
    for score, index, box, low_res in candidates:
        height, width = state["original_height"], state["original_width"]
        mask = to_numpy(upsample_probs(low_res[None], height, width)[0, 0] > 0.5)  # thresholded where it lives
        detections.append(
            {
                "prompt": texts[index],
                "prompt_index": index if prompts else -1,
                "score": score,
                "box": [float(v) for v in box],
                "mask": encode(mask) if encode else mask,
            }
        )
    return Detections(detections, best, total)


def write_outputs(
    image_rgb: np.ndarray,
    detections: Sequence[dict[str, Any]],
    output: Path,
    json_path: Path | None,
    info: dict[str, Any],
    prompt_boxes: Sequence[tuple[Sequence[float], bool]] = (),
    max_detections: int = 10,
    total: int | None = None,
) -> None:
    """Write the overlay (format from ``output``'s suffix) and, when asked, the detections JSON (RLE masks).

    Both hold the ``max_detections`` best detections; the JSON also records how many there were in all
    (``total``, default ``len(detections)``) and ``info`` (prompts, boxes, threshold, backend, precision, weights).
    """
    height, width = image_rgb.shape[:2]
    random_weights = info.get("weights_kind") == "random"
    pixel_prompts = [(pixel_box(box, width, height), positive) for box, positive in prompt_boxes]
    image = render_overlay(image_rgb, detections, pixel_prompts, max_detections, random_weights)
    image.save(output, format=IMAGE_FORMATS.get(output.suffix.lower(), "PNG"))
    if json_path is not None:
        json_path.write_text(json.dumps(detections_json(detections, info, max_detections, total), indent=1))


def detections_json(
    detections: Sequence[dict[str, Any]], info: dict[str, Any], max_detections: int, total: int | None = None
) -> dict[str, Any]:
    """The detections JSON: ``info``, counts (``total`` above the threshold, default ``len(detections)``) and the
    ``max_detections`` best detections with RLE masks."""
    shown = sorted(detections, key=lambda d: -d["score"])[:max_detections]
    return {
        **info,
        "detections_total": len(detections) if total is None else total,
        "detections_shown": len(shown),
        "detections": [
            {"prompt": d["prompt"], "score": d["score"], "box_xyxy": d["box"], "mask_rle": mask_to_rle(d["mask"])}
            for d in shown
        ],
    }


def check_prompt_request(
    prompts: Sequence[str],
    boxes: Sequence[str],
    threshold: float,
    output: Path | None,
    json_path: Path | None,
    points: Sequence[str] = (),
    everything: bool = False,
) -> None:
    """What ``segment`` and ``client`` refuse before any work: a threshold outside [0, 1], no prompt at all,
    prompts of two modes at once, an overlay or JSON path that cannot be written (the overlay's suffix picks
    PNG, JPEG or WebP).

    Args:
        prompts: Text prompts.
        boxes: Box prompts as given (``x0,y0,x1,y1[,neg]``).
        threshold: Score threshold.
        output: Overlay to write, if any.
        json_path: Detections JSON to write, if any.
        points: Clicks as given (``x,y[,neg]``): with them, at most one box and no text prompt.
        everything: Automatic masks: no other prompt.
    """
    from ..paths import check_output_file
    from .processor import check_threshold

    check_threshold(threshold, "--threshold")
    if everything and (prompts or boxes or points):
        raise Sam3TrtError("--everything finds every object by itself: drop --prompt, --box and --point")
    if points and prompts:
        raise Sam3TrtError(
            "--point clicks one object (upstream's predict_inst); --prompt finds every instance of a concept: "
            "run them as two commands"
        )
    if points and len(boxes) > 1:
        raise Sam3TrtError(f"with --point give at most one --box (the clicks refine it), got {len(boxes)}")
    if not (prompts or boxes or points or everything):
        raise Sam3TrtError(
            "give at least one --prompt TEXT, --box x0,y0,x1,y1[,neg] or --point x,y[,neg], or --everything"
        )
    check_output_file(output, "--output", tuple(IMAGE_FORMATS))
    check_output_file(json_path, "--json", (".json",))


def segment_image(
    image: Path,
    artifacts: Path,
    output: Path,
    prompts: Sequence[str] = (),
    boxes: Sequence[str] = (),
    backend: str = "auto",
    threshold: float = 0.5,
    json_path: Path | None = None,
    max_detections: int = 10,
    progress: Callable[[str], None] | None = None,
    points: Sequence[str] = (),
    multimask: bool = False,
    everything: bool = False,
    automatic: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``sam3-trt segment``: every input checked first, then the prompts run, the overlay (and JSON) written.

    Args:
        image: Image file.
        artifacts: Export folder or engine folder.
        output: Overlay to write (``.png``, ``.jpg``, ``.jpeg`` or ``.webp``: the suffix picks the format).
        prompts: Text prompts (all run in one decoder batch).
        boxes: Box prompts ``x0,y0,x1,y1[,neg]`` in pixels of ``image``.
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``.
        threshold: Keep detections scoring above it (0 to 1).
        json_path: Detections JSON (RLE masks) to write, if any.
        max_detections: Best detections drawn and written.
        progress: Called with progress lines.
        points: Clicks ``x,y[,neg]`` in pixels (upstream's ``predict_inst``; with at most one box); needs an
            export made with ``--video``. Scores are the masks' predicted IoUs.
        multimask: With clicks: the three candidate masks instead of one.
        everything: Automatic masks (:class:`~sam3_trt.runtime.automatic.Sam3AutomaticMaskGenerator`).
        automatic: Keyword arguments for the generator (``points_per_side``, ``pred_iou_thresh``, ...).

    Returns:
        The summary line's fields: detections, drawn, best_score, output, json.
    """
    from ..export.model import WeightsOrigin
    from .artifacts import resolve_artifacts
    from .image import open_image, to_uint8_hwc
    from .processor import Sam3Processor

    say = progress or (lambda _msg: None)
    if max_detections < 1:
        raise Sam3TrtError(f"--max-detections {max_detections}: use 1 or more")
    check_prompt_request(prompts, boxes, threshold, output, json_path, points, everything)
    picture = open_image(image)
    rgb = to_uint8_hwc(picture)
    height, width = rgb.shape[:2]
    parsed = [parse_box(b, width, height) for b in boxes]
    clicks = [parse_point(p, width, height) for p in points]
    found = resolve_artifacts(artifacts)
    weights_dict = found.manifest.get("weights", {"kind": "unknown", "variant": "?"})
    weights = WeightsOrigin.from_dict(weights_dict).describe()
    interactive = bool(clicks or everything)
    with Sam3Processor(
        found.folder, backend=backend, confidence_threshold=threshold, interactive=interactive
    ) as processor:
        say(f"backend {processor.backend.name}; {weights}")
        if everything:
            detections, best, total = everything_detections(processor, rgb, max_detections, automatic or {})
        elif clicks:
            pixel_boxes = [parse_pixel_box(b)[0] for b in boxes]
            detections, best, total = click_detections(processor, picture, clicks, pixel_boxes, multimask)
        else:
            # only the drawn detections reach full size: memory is bounded whatever the threshold and image size
            detections, best, total = segment(processor, picture, prompts, parsed, max_detections)
        info = {
            "image": str(image),
            "size": [width, height],
            "prompts": list(prompts),
            "boxes": list(boxes),
            **({"points": list(points), "multimask": multimask} if points else {}),
            **({"everything": automatic or {}} if everything else {}),
            "threshold": threshold,
            "backend": processor.backend.name,
            "precision": found.manifest.get("precision", {}).get("mode", "fp32"),
            "weights": weights,
            "weights_kind": weights_dict.get("kind"),
            "best_score": round(best, 6),
        }
    if not detections and everything:
        say("no mask passed the automatic-mask filters: lower --pred-iou-thresh or --stability-thresh")
    elif not detections:
        say(
            f"no detection scored above --threshold {threshold}; the best score was {best:.3f}: "
            f"lower --threshold (e.g. --threshold {max(0.0, best - 0.01):.2f}) to see it"
        )
    write_outputs(rgb, detections, output, json_path, info, parsed, max_detections, total)
    return {
        "detections": total,
        "drawn": min(len(detections), max_detections),
        "best_score": round(best, 6),
        "output": str(output),
        "json": str(json_path) if json_path else None,
    }


def click_detections(
    processor: Any,
    image: Any,
    clicks: Sequence[tuple[list[float], int]],
    boxes: Sequence[Sequence[float]],
    multimask: bool,
) -> Detections:
    """Clicks (and at most one pixel box) on one image as detections: one mask, or three with ``multimask``,
    scored by predicted IoU (``prompt``: ``click`` or ``click k/3``)."""
    state = processor.set_image(image)
    coords = np.array([c for c, _ in clicks], np.float64)
    labels = np.array([label for _, label in clicks], np.int64)
    return clicked_masks(processor, state, coords, labels, boxes[0] if boxes else None, multimask)


def clicked_masks(
    processor: Any, state: dict, point_coords: Any, point_labels: Any, box: Any, multimask: bool
) -> Detections:
    """``predict_inst`` on an encoded image as detections (``segment --point`` and the server's click requests).

    Args:
        processor: An interactive :class:`~sam3_trt.Sam3Processor`.
        state: Its state of the image.
        point_coords: ``[N, 2]`` pixel x, y.
        point_labels: ``[N]`` 1 positive, 0 negative.
        box: One pixel box ``x0, y0, x1, y1``, or ``None``.
        multimask: Three masks instead of one.

    Returns:
        One detection per mask (``prompt`` ``click`` or ``click k/3``, ``score`` the predicted IoU, ``box`` the
        mask's pixel extent, ``mask`` bool ``HxW``).
    """
    masks, ious, _ = processor.predict_inst(
        state, point_coords=point_coords, point_labels=point_labels, box=box, multimask_output=multimask
    )
    detections = []
    for k, (mask, iou) in enumerate(zip(masks, ious, strict=True)):
        binary = mask > 0
        rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
        box_xyxy = (
            [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)] if len(rows) else [0.0] * 4
        )
        name = f"click {k + 1}/{len(masks)}" if multimask else "click"
        detections.append({"prompt": name, "score": float(iou), "box": box_xyxy, "mask": binary})
    return Detections(detections, max((d["score"] for d in detections), default=0.0), len(detections))


def everything_detections(
    processor: Any, image_rgb: np.ndarray, max_detections: int, settings: dict[str, Any]
) -> Detections:
    """Automatic masks as detections, best predicted IoU first (``prompt``: ``everything``); only the best
    ``max_detections`` are decoded to full-size masks."""
    from .automatic import Sam3AutomaticMaskGenerator

    generator = Sam3AutomaticMaskGenerator(processor, output_mode="uncompressed_rle", **settings)
    records = sorted(generator.generate(image_rgb), key=lambda r: -r["predicted_iou"])
    detections = []
    for r in records[:max_detections]:
        x, y, w, h = r["bbox"]
        detections.append(
            {
                "prompt": "everything",
                "score": float(r["predicted_iou"]),
                "box": [x, y, x + w, y + h],
                "mask": rle_to_mask(r["segmentation"]),
                "stability_score": r["stability_score"],
                "point_coords": r["point_coords"],
            }
        )
    best = max((r["predicted_iou"] for r in records), default=0.0)
    return Detections(detections, float(best), len(records))


#: ``segment --everything``'s generator settings when not given (SAM2's generator's defaults).
AUTOMATIC_DEFAULTS = {"points_per_side": 32, "pred_iou_thresh": 0.8, "stability_score_thresh": 0.95}
_AUTOMATIC_OPTIONS = {
    "points_per_side": "--points-per-side",
    "pred_iou_thresh": "--pred-iou-thresh",
    "stability_score_thresh": "--stability-thresh",
}


def automatic_settings(everything: bool, given: dict[str, Any]) -> dict[str, Any] | None:
    """The generator settings of ``segment --everything`` (defaults filled), checked; ``None`` without it.

    Args:
        everything: Whether ``--everything`` was given.
        given: Setting name -> value given, ``None`` when not given.

    Raises:
        Sam3TrtError: a setting given without ``--everything`` (it would do nothing), or out of range.
    """
    named = {k: v for k, v in given.items() if v is not None}
    if not everything:
        if named:
            options = ", ".join(_AUTOMATIC_OPTIONS[k] for k in named)
            raise Sam3TrtError(f"{options} only apply with --everything; add it or drop them")
        return None
    settings = {**AUTOMATIC_DEFAULTS, **named}
    if isinstance(settings["points_per_side"], bool) or settings["points_per_side"] < 1:
        raise Sam3TrtError(f"--points-per-side {settings['points_per_side']}: use 1 or more")
    for key in ("pred_iou_thresh", "stability_score_thresh"):
        if not 0.0 <= float(settings[key]) <= 1.0:  # NaN fails this too
            raise Sam3TrtError(f"{_AUTOMATIC_OPTIONS[key]} {settings[key]}: use a number in [0, 1]")
    return settings
