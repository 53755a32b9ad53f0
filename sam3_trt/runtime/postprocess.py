"""sam3's post-processing for one prompt, as plain functions (torch when available, else numpy).

Same arithmetic as upstream ``Sam3Processor._forward_grounding``: ``scores = sigmoid(logit) *
sigmoid(presence)``, keep ``scores > threshold`` *before* upsampling, upsample only the kept masks
(bilinear, ``align_corners=False``) to the original size, then sigmoid. Upstream stores those sigmoid
probabilities under ``masks_logits``; ``masks = masks_logits > 0.5``; boxes become pixel ``x0, y0, x1, y1``.

The steps are separate so that callers choose what reaches full resolution::

    keep, scores, total = select_queries(pred_logits, presence_logit, threshold, max_detections)
    boxes = boxes_to_pixels(pred_boxes[keep], height, width)
    for low_res in pred_masks[keep]:                      # one at a time: memory of one full-size mask
        mask = upsample_probs(low_res[None], height, width)[0, 0] > 0.5

``max_detections`` keeps the best-scoring queries (in query order, as upstream orders them) before any
mask is upsampled, so memory is bounded by ``max_detections`` full-size masks whatever the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import is_torch_tensor


def _sigmoid_np(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """``[out_size, in_size]`` weights of bilinear resizing with ``align_corners=False`` (PyTorch's rule)."""
    # float32 arithmetic, as PyTorch's CPU kernel computes source positions
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo.astype(np.float32)
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lo), 1.0 - frac)
    np.add.at(weights, (rows, hi), frac)
    return weights


def select_queries(
    pred_logits: Any, presence_logit: Any, threshold: float, max_detections: int | None = None
) -> tuple[Any, Any, int]:
    """Which queries of one prompt are kept, before anything is upsampled.

    Args:
        pred_logits: ``[Q]`` query logits (numpy or torch).
        presence_logit: ``[1]`` presence logit.
        threshold: Keep queries whose score is ``> threshold`` (upstream's comparison).
        max_detections: Keep at most this many, the best-scoring (ties: the earlier query); ``None``: no limit.

    Returns:
        ``(indices [K] ascending, scores [K] float32, queries above the threshold)`` as torch tensors when the
        logits are, else numpy arrays; the count is a Python int (it may exceed K).
    """
    if is_torch_tensor(pred_logits):
        import torch

        probs = pred_logits.sigmoid() * presence_logit.sigmoid().reshape(())
        keep = torch.nonzero(probs > threshold).reshape(-1)
        total = int(keep.numel())
        if max_detections is not None and total > max_detections:
            order = torch.argsort(-probs[keep], stable=True)[:max_detections]
            keep = torch.sort(keep[order]).values
        return keep, probs[keep], total
    probs = _sigmoid_np(np.asarray(pred_logits)) * _sigmoid_np(np.asarray(presence_logit)).reshape(())
    keep = np.flatnonzero(probs > threshold)
    total = int(keep.size)
    if max_detections is not None and total > max_detections:
        keep = np.sort(keep[np.argsort(-probs[keep], kind="stable")[:max_detections]])
    return keep, probs[keep].astype(np.float32), total


def boxes_to_pixels(boxes: Any, height: int, width: int) -> Any:
    """``[K, 4]`` normalised ``cx, cy, w, h`` -> float32 pixel ``x0, y0, x1, y1`` (numpy or torch)."""
    if is_torch_tensor(boxes):
        import torch

        cx, cy, w, h = boxes.unbind(-1)
        xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        scale = torch.tensor([width, height, width, height], dtype=xyxy.dtype, device=xyxy.device)
        return xyxy * scale[None, :]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    xyxy = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
    return (xyxy * np.array([width, height, width, height], dtype=np.float32)).astype(np.float32)


def upsample_probs(masks: Any, height: int, width: int) -> Any:
    """``[K, h, w]`` mask logits -> ``[K, 1, height, width]`` float32 probabilities (upstream's ``masks_logits``).

    Bilinear with ``align_corners=False`` then sigmoid; torch's ``interpolate`` for tensors, the same weights as
    two matrix products in numpy.
    """
    if is_torch_tensor(masks):
        import torch.nn.functional as F

        kept = masks.unsqueeze(1)
        if not kept.shape[0]:
            return kept.new_zeros((0, 1, height, width))
        return F.interpolate(kept, size=(height, width), mode="bilinear", align_corners=False).sigmoid()
    kept = np.asarray(masks, dtype=np.float32)
    if not len(kept):
        return np.zeros((0, 1, height, width), np.float32)
    ry = bilinear_matrix(height, kept.shape[-2])
    rx = bilinear_matrix(width, kept.shape[-1])
    return _sigmoid_np(np.einsum("hy,kyx,wx->khw", ry, kept, rx, optimize=True))[:, None]


def postprocess(
    pred_logits: Any,
    pred_boxes: Any,
    presence_logit: Any,
    pred_masks: Any,
    height: int,
    width: int,
    threshold: float,
    max_detections: int | None = None,
) -> dict[str, Any]:
    """Detections of one prompt, in upstream's result format.

    Args:
        pred_logits: ``[Q]`` query logits.
        pred_boxes: ``[Q, 4]`` normalised ``cx, cy, w, h``.
        presence_logit: ``[1]`` presence logit.
        pred_masks: ``[Q, h, w]`` mask logits (288x288).
        height: Original image height.
        width: Original image width.
        threshold: Keep queries whose score is ``> threshold`` (upstream's comparison).
        max_detections: Keep at most this many (the best scores) before upsampling; ``None``: no limit.

    Returns:
        ``{"masks_logits": [K,1,H,W] float32 probabilities, "masks": [K,1,H,W] bool,
        "boxes": [K,4] float32 pixels xyxy, "scores": [K] float32}`` as torch tensors when the inputs are
        torch tensors, else numpy arrays.
    """
    if not is_torch_tensor(pred_logits):
        pred_boxes, pred_masks = np.asarray(pred_boxes, np.float32), np.asarray(pred_masks, np.float32)
    keep, scores, _ = select_queries(pred_logits, presence_logit, threshold, max_detections)
    probs = upsample_probs(pred_masks[keep], height, width)
    return {
        "masks_logits": probs,
        "masks": probs > 0.5,
        "boxes": boxes_to_pixels(pred_boxes[keep], height, width),
        "scores": scores,
    }
