"""Plugin-free RoIAlign that exports to plain ONNX ops (Equal, Cast, MatMul) for TensorRT and TensorRT for RTX.

sam3 pools box prompts with ``torchvision.ops.roi_align(feats, boxes, 7)``: ``spatial_scale=1``,
``aligned=False`` and *adaptive* sampling (``sampling_ratio=-1``: ``ceil(roi_size / 7)`` samples per bin,
so a full-image box on a 72x72 map takes 11x11 samples per bin while a small box takes 1). ONNX's
``RoiAlign`` needs TensorRT's ROIAlign plugin, which TensorRT for RTX does not ship.

Bilinear sampling followed by averaging is linear in the feature map and separable in y and x, so for
each box the pooled output is ``Wy @ F @ Wx^T`` with two small interpolation matrices
(``Wy``: ``[out, H]``, ``Wx``: ``[out, W]``). We build those matrices from a fixed grid of
``max_grid`` samples per bin with per-box validity masks (exactly torchvision's adaptive count while
``ceil(roi / out) <= max_grid``, which holds for every box inside the image) and torchvision's
boundary rules, then contract with two matmuls. No gathers, no data-dependent shapes.
"""

from __future__ import annotations

import math
from typing import Any


def _axis_weights(start: Any, roi: Any, size: int, out: int, max_grid: int) -> Any:
    """Interpolation-and-average matrix for one axis.

    Args:
        start: Box start along the axis, ``[B, n]`` (feature pixels).
        roi: Box extent along the axis (already clamped to >= 1), ``[B, n]``.
        size: Feature map size along the axis (H or W).
        out: Pooled output size (7 for sam3).
        max_grid: Static upper bound on samples per bin.

    Returns:
        ``[B, n, out, size]`` weights; row ``p`` averages the bilinear samples of bin ``p``.
    """
    import torch

    dtype, device = start.dtype, start.device
    bin_size = roi / out  # [B, n]
    grid = torch.ceil(roi / out).clamp(1, max_grid)  # adaptive samples per bin, [B, n]
    p = torch.arange(out, dtype=dtype, device=device)  # [out]
    i = torch.arange(max_grid, dtype=dtype, device=device)  # [G]
    # sample coordinate: start + p * bin + (i + 0.5) * bin / grid  -> [B, n, out, G]
    coord = (
        start[..., None, None] + p[:, None] * bin_size[..., None, None] + (i + 0.5) * (bin_size / grid)[..., None, None]
    )
    used = (i < grid[..., None, None]).to(dtype)  # samples beyond this box's grid count nothing
    inside = ((coord >= -1.0) & (coord <= size)).to(dtype)  # torchvision: outside -> 0
    coord = coord.clamp(min=0.0)
    low = torch.floor(coord)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low)
    scale = used * inside / grid[..., None, None]
    positions = torch.arange(size, dtype=dtype, device=device)  # [size]
    w_low = ((1.0 - frac) * scale)[..., None] * (positions == low[..., None]).to(dtype)
    w_high = (frac * scale)[..., None] * (positions == high[..., None]).to(dtype)
    return (w_low + w_high).sum(dim=-2)  # sum over samples -> [B, n, out, size]


def roi_align(features: Any, boxes: Any, output_size: int, max_grid: int | None = None) -> Any:
    """RoIAlign equal to ``torchvision.ops.roi_align(features, list(boxes), output_size)``.

    Matches torchvision's defaults (``spatial_scale=1``, ``sampling_ratio=-1``, ``aligned=False``).

    Args:
        features: ``[B, C, H, W]`` feature map.
        boxes: ``[B, n, 4]`` boxes per batch element, ``x0, y0, x1, y1`` in feature pixels.
        output_size: Pooled size (square).
        max_grid: Static bound on samples per bin; defaults to ``ceil(max(H, W) / output_size)``,
            enough for any box inside the feature map. Boxes larger than the map would need more
            samples than this and are averaged over ``max_grid`` only (the runtime rejects them).

    Returns:
        ``[B * n, C, output_size, output_size]``, batch-major like torchvision's list input.
    """
    import torch

    _, channels, height, width = features.shape
    if max_grid is None:
        max_grid = math.ceil(max(int(height), int(width)) / output_size)
    x0, y0, x1, y1 = boxes.unbind(-1)
    roi_w = torch.clamp(x1 - x0, min=1.0)
    roi_h = torch.clamp(y1 - y0, min=1.0)
    wy = _axis_weights(y0, roi_h, int(height), output_size, max_grid)  # [B, n, out, H]
    wx = _axis_weights(x0, roi_w, int(width), output_size, max_grid)  # [B, n, out, W]
    # [B, n, out, H] x [B, C, H, W] -> [B, n, C, out, W]
    rows = torch.einsum("bnph,bchw->bncpw", wy, features)
    pooled = torch.einsum("bncpw,bnqw->bncpq", rows, wx)
    return pooled.reshape(-1, channels, output_size, output_size)
