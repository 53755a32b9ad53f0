"""sam3's post-processing for one prompt, as plain functions (torch when available, else numpy).

Same arithmetic as upstream ``Sam3Processor._forward_grounding``: ``scores = sigmoid(logit) *
sigmoid(presence)``, keep ``scores > threshold`` *before* upsampling, upsample only the kept masks
(bilinear, ``align_corners=False``) to the original size, then sigmoid. Upstream stores those sigmoid
probabilities under ``masks_logits``; ``masks = masks_logits > 0.5``; boxes become pixel ``x0, y0, x1, y1``.
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


def postprocess(
    pred_logits: Any,
    pred_boxes: Any,
    presence_logit: Any,
    pred_masks: Any,
    height: int,
    width: int,
    threshold: float,
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

    Returns:
        ``{"masks_logits": [K,1,H,W] float32 probabilities, "masks": [K,1,H,W] bool,
        "boxes": [K,4] float32 pixels xyxy, "scores": [K] float32}`` as torch tensors when the inputs are
        torch tensors, else numpy arrays.
    """
    if is_torch_tensor(pred_logits):
        return _postprocess_torch(pred_logits, pred_boxes, presence_logit, pred_masks, height, width, threshold)
    probs = _sigmoid_np(np.asarray(pred_logits)) * _sigmoid_np(np.asarray(presence_logit)).reshape(())
    keep = probs > threshold
    boxes = np.asarray(pred_boxes, dtype=np.float32)[keep]
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    xyxy = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
    xyxy = xyxy * np.array([width, height, width, height], dtype=np.float32)
    kept = np.asarray(pred_masks, dtype=np.float32)[keep]
    ry = bilinear_matrix(height, kept.shape[-2])
    rx = bilinear_matrix(width, kept.shape[-1])
    up = (
        np.einsum("hy,kyx,wx->khw", ry, kept, rx, optimize=True)
        if len(kept)
        else np.zeros((0, height, width), np.float32)
    )
    probs_masks = _sigmoid_np(up)[:, None]
    return {
        "masks_logits": probs_masks,
        "masks": probs_masks > 0.5,
        "boxes": xyxy.astype(np.float32),
        "scores": probs[keep].astype(np.float32),
    }


def _postprocess_torch(
    pred_logits: Any, pred_boxes: Any, presence_logit: Any, pred_masks: Any, height: int, width: int, threshold: float
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    probs = pred_logits.sigmoid() * presence_logit.sigmoid().reshape(())
    keep = probs > threshold
    boxes = pred_boxes[keep]
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    scale = torch.tensor([width, height, width, height], dtype=xyxy.dtype, device=xyxy.device)
    xyxy = xyxy * scale[None, :]
    kept = pred_masks[keep].unsqueeze(1)
    if kept.shape[0]:
        up = F.interpolate(kept, size=(height, width), mode="bilinear", align_corners=False).sigmoid()
    else:
        up = kept.new_zeros((0, 1, height, width))
    return {"masks_logits": up, "masks": up > 0.5, "boxes": xyxy, "scores": probs[keep]}
