"""Clicks and boxes on one image (upstream's ``predict_inst``): the plain pre- and post-processing functions.

Upstream's interactive image predictor (``sam3.model.sam1_task_predictor.SAM3InteractiveImagePredictor``, reached
through ``Sam3Image.predict_inst``) runs the tracker's prompt encoder and mask decoder, without memory, on the
tracker neck levels of the image the processor encoded. Here that network part is the ``interactive_mask_head``
graph (:mod:`sam3_trt.specs`); these functions do the rest as upstream does it:

1. :func:`check_prompts` validates points, labels, a box and a mask input and turns them into the graph's
   feeds (pixel coordinates of the 1008x1008 input, box corners first with labels 2 and 3);
2. the graph returns all four mask tokens' low-res logits (token 0 already upstream's single-mask choice);
3. :func:`finish` picks the multimask or single output, fills small holes (upstream's ``max_hole_area`` 256
   on the low-res logits, 8-connected background components), upsamples bilinearly to the image size,
   thresholds at 0 and clamps the returned low-res logits to [-32, 32].

Every bad value is refused in one line before any graph runs (upstream asserts or runs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..specs import INTERACTIVE_MASK_HEAD, LOW_RES, RESOLUTION
from .arrays import installed, to_numpy
from .postprocess import bilinear_matrix

#: The graph clicks run on.
GRAPH = INTERACTIVE_MASK_HEAD.name
#: Prompt sets (objects) and points per set (box corners count as two) one graph run takes.
MAX_SETS = INTERACTIVE_MASK_HEAD.dim("O").max
MAX_POINTS = INTERACTIVE_MASK_HEAD.dim("K").max
#: Upstream's interactive predictor defaults (``SAM3InteractiveImagePredictor.__init__``).
MASK_THRESHOLD = 0.0
MAX_HOLE_AREA = 256.0
#: Upstream clamps the returned low-res logits to this range (``_predict``).
LOW_RES_CLAMP = 32.0


def _as_array(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError):
        raise Sam3TrtError(f"{name} must be numbers, got {value!r}") from None


def _inside(values: np.ndarray, name: str, width: float, height: float, normalize: bool) -> None:
    if not np.isfinite(values).all():
        raise Sam3TrtError(f"{name} has NaN or infinite values: {values.tolist()}")
    x, y = values[..., 0], values[..., 1]
    if x.min() < 0 or y.min() < 0 or x.max() > width or y.max() > height:
        unit = "pixels of the image" if normalize else "normalised [0, 1] coordinates (normalize_coords=False)"
        raise Sam3TrtError(
            f"{name} {values.tolist()} lies outside the image ({width:g} x {height:g}); give x, y in {unit}"
        )


def check_prompts(
    point_coords: Any,
    point_labels: Any,
    box: Any,
    mask_input: Any,
    image_hw: tuple[int, int],
    normalize_coords: bool = True,
) -> dict[str, np.ndarray]:
    """Validate one image's prompts and return the ``interactive_mask_head`` feeds for them (no image levels).

    Args:
        point_coords: ``[N, 2]`` (one prompt set) or ``[B, N, 2]`` x, y; pixels of the image with
            ``normalize_coords`` (upstream's default), else in [0, 1].
        point_labels: ``[N]`` or ``[B, N]``: 1 positive, 0 negative.
        box: ``[4]`` or ``[B, 4]`` x0, y0, x1, y1 in the same coordinates.
        mask_input: ``[1, 288, 288]`` or ``[B, 1, 288, 288]`` low-res logits of a previous call.
        image_hw: The image's height and width.
        normalize_coords: As upstream: coordinates are pixels of the image (``True``) or already in [0, 1].

    Returns:
        ``point_coords`` float32 ``[B, K, 2]`` (1008x1008 pixels), ``point_labels`` int32 ``[B, K]``,
        ``mask_input`` float32 ``[B, 1, 288, 288]`` and ``use_mask_input`` bool ``[B]``.
    """
    height, width = image_hw
    extent = (float(width), float(height)) if normalize_coords else (1.0, 1.0)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    sets: int | None = None
    if box is not None:
        boxes = _as_array(box, "box")
        if boxes.ndim == 1:
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise Sam3TrtError(f"box must be [4] or [B, 4] (x0, y0, x1, y1), got shape {list(boxes.shape)}")
        corners = boxes.reshape(-1, 2, 2)
        _inside(corners, "box", *extent, normalize_coords)
        if (corners[:, 1] <= corners[:, 0]).any():
            raise Sam3TrtError(f"box {boxes.tolist()} must have x1 > x0 and y1 > y0 (x0, y0, x1, y1 format)")
        sets = len(boxes)
        parts.append((corners, np.tile(np.array([[2, 3]]), (sets, 1))))
    if (point_coords is None) != (point_labels is None):
        given, missing = ("point_coords", "point_labels") if point_labels is None else ("point_labels", "point_coords")
        raise Sam3TrtError(f"{given} was given without {missing}: pass both (labels 1 positive, 0 negative)")
    if point_coords is not None:
        coords = _as_array(point_coords, "point_coords")
        labels = _as_array(point_labels, "point_labels")
        if coords.ndim == 2:
            coords, labels = coords[None], labels[None]
        if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[1] == 0:
            raise Sam3TrtError(f"point_coords must be [N, 2] or [B, N, 2] with N >= 1, got shape {list(coords.shape)}")
        if labels.shape != coords.shape[:2]:
            raise Sam3TrtError(
                f"point_labels has shape {list(labels.shape)} for point_coords of shape {list(coords.shape)}: "
                "give one label per point"
            )
        if not np.isin(labels, (0, 1)).all():
            raise Sam3TrtError(f"point_labels {labels.tolist()}: use 1 (positive) or 0 (negative) for each point")
        _inside(coords, "point_coords", *extent, normalize_coords)
        if sets is not None and len(coords) != sets:
            raise Sam3TrtError(f"{sets} boxes and {len(coords)} point sets: give as many point sets as boxes")
        sets = len(coords)
        parts.append((coords, labels))
    if sets is None:
        raise Sam3TrtError(
            "predict_inst needs point_coords/point_labels or a box (mask_input alone is not supported: "
            "pass the click that produced it along with it)"
        )
    coords = np.concatenate([p[0] for p in parts], axis=1)
    labels = np.concatenate([p[1] for p in parts], axis=1)
    if sets > MAX_SETS or coords.shape[1] > MAX_POINTS:
        raise Sam3TrtError(
            f"{sets} prompt sets of {coords.shape[1]} points (box corners count as 2): the graph takes at most "
            f"{MAX_SETS} sets of {MAX_POINTS}; split the call"
        )
    # upstream's float32 arithmetic: pixels divided by the image size, then times 1008
    coords32 = coords.astype(np.float32)
    if normalize_coords:
        coords32 = coords32 / np.array(extent, np.float32)
    feeds = {
        "point_coords": coords32 * np.float32(RESOLUTION),
        "point_labels": labels.astype(np.int32),
        "mask_input": np.zeros((sets, 1, LOW_RES, LOW_RES), np.float32),
        "use_mask_input": np.zeros(sets, bool),
    }
    if mask_input is not None:
        masks = _as_array(mask_input, "mask_input").astype(np.float32)
        if masks.ndim == 3:
            masks = masks[None]
        if masks.shape[1:] != (1, LOW_RES, LOW_RES) or len(masks) not in (1, sets):
            raise Sam3TrtError(
                f"mask_input has shape {list(masks.shape)}: pass the low_res_masks of a previous call for one "
                f"mask, [1, {LOW_RES}, {LOW_RES}] (or [B, 1, {LOW_RES}, {LOW_RES}], one per prompt set)"
            )
        if not np.isfinite(masks).all():
            raise Sam3TrtError("mask_input has NaN or infinite values")
        feeds["mask_input"] = np.ascontiguousarray(np.broadcast_to(masks, (sets, 1, LOW_RES, LOW_RES)))
        feeds["use_mask_input"][:] = True
    return feeds


def clean_low_res(
    logits: np.ndarray, max_hole_area: float, max_sprinkle_area: float = 0.0, threshold: float = MASK_THRESHOLD
) -> np.ndarray:
    """Upstream's ``SAM2Transforms.postprocess_masks`` clean-up of low-res logits: 8-connected components of the
    background (logit <= ``threshold``) of at most ``max_hole_area`` pixels become ``threshold + 10``, and
    foreground components of at most ``max_sprinkle_area`` pixels become ``threshold - 10``; both found on the
    logits as given, as upstream finds them.

    Args:
        logits: ``[..., H, W]`` low-res mask logits.
        max_hole_area: Largest hole filled (pixels of the low-res mask); 0 fills none.
        max_sprinkle_area: Largest speck removed; 0 removes none.
        threshold: The mask threshold.
    """
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    try:
        from scipy import ndimage
    except ImportError:
        raise Sam3TrtError(
            "clicks fill holes in masks with scipy.ndimage, which is not installed: pip install scipy (a sam3-trt "
            "dependency; `sam3-trt bundle` carries it for offline machines)"
        ) from None

    out = np.array(logits, dtype=np.float32, copy=True)
    eight = np.ones((3, 3), bool)
    for mask in out.reshape(-1, *out.shape[-2:]):
        changes = []
        for area, region, value in (
            (max_hole_area, mask <= threshold, threshold + 10.0),
            (max_sprinkle_area, mask > threshold, threshold - 10.0),
        ):
            if area <= 0:
                continue
            labels, count = ndimage.label(region, structure=eight)
            if count:
                small = np.bincount(labels.ravel()) <= area
                small[0] = False  # pixels outside every component
                changes.append((small[labels], value))
        for where, value in changes:
            mask[where] = value
    return out


def upsample_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[B, C, h, w]`` logits -> ``[B, C, height, width]``, bilinear, ``align_corners=False`` (torch's
    ``interpolate`` when torch is installed, as upstream; else the same weights as two matrix products)."""
    if installed("torch"):
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False).numpy()
    ry = bilinear_matrix(height, logits.shape[-2])
    rx = bilinear_matrix(width, logits.shape[-1])
    return np.einsum("hy,bcyx,wx->bchw", ry, logits.astype(np.float32), rx, optimize=True)


def finish(
    low_res: np.ndarray,
    iou: np.ndarray,
    image_hw: tuple[int, int],
    return_logits: bool,
    max_hole_area: float = MAX_HOLE_AREA,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chosen tokens' low-res logits of B prompt sets -> upstream's ``(masks, iou_predictions, low_res_masks)``.

    Args:
        low_res: ``[B, C, 288, 288]`` logits (``Sam3Processor.predict_inst_low_res``).
        iou: ``[B, C]`` predicted IoUs.
        image_hw: The image's height and width.
        return_logits: Full-size logits instead of 0/1 masks.
        max_hole_area: See :func:`clean_low_res`.

    Returns:
        numpy float32 arrays shaped as upstream's: ``[C, H, W]``, ``[C]``, ``[C, 288, 288]`` for one set,
        with a leading ``B`` for several (upstream squeezes axis 0 only).
    """
    masks = upsample_logits(clean_low_res(low_res, max_hole_area), *image_hw)
    if not return_logits:
        masks = (masks > MASK_THRESHOLD).astype(np.float32)
    low_res = np.clip(low_res, -LOW_RES_CLAMP, LOW_RES_CLAMP)
    squeeze = (lambda a: a[0]) if len(iou) == 1 else (lambda a: a)
    return squeeze(masks), squeeze(iou), squeeze(low_res)


def check_batch_lists(values: dict[str, Sequence[Any] | None], count: int) -> None:
    """``predict_inst_batch``'s per-image lists: each given one must hold one entry per image."""
    for name, value in values.items():
        if value is not None and (not isinstance(value, (list, tuple)) or len(value) != count):
            got = f"{len(value)} entries" if isinstance(value, (list, tuple)) else type(value).__name__
            raise Sam3TrtError(f"{name} must be a list with one entry per image ({count}), got {got}")
