"""Bilinear resize written as two gathers and weights per axis, with torch's own index arithmetic.

ONNX ``Resize`` is not computed the same way by every runtime: ONNX Runtime maps output to input
coordinates through a float ``scale = out / in`` and lands up to ~1e-4 pixel away from torch, which on
steep mask logits (the tracker's memory encoder sees ``sigmoid(x) * 20 - 10``) is an error of 2e-3 per
resize, amplified by the LayerNorms after it. Here the source coordinate of each output pixel is
computed as torch's ``upsample_bilinear2d`` computes it (``src = (in / out) * (dst + 0.5) - 0.5`` in
float32, clamped at 0; ``align_corners=False``, no antialias), and the result is a weighted sum of two
gathered rows and then two gathered columns: elementwise float32 arithmetic that every runtime does alike.
The input size may be dynamic (it is read from the tensor's shape inside the graph).
"""

from __future__ import annotations

from typing import Any


def _axis(in_size: Any, out_size: int, like: Any) -> tuple[Any, Any, Any, Any]:
    """Indices ``i0, i1`` and weights ``w0, w1`` of one axis (torch's ``area_pixel_compute_source_index``)."""
    import torch

    # the input size as a tensor from the shape (not torch.tensor(size): that fixes it under export)
    size = torch.arange(in_size, device=like.device)[-1:] + 1
    scale = size.to(torch.float32) / out_size
    dst = torch.arange(out_size, device=like.device, dtype=torch.float32)
    src = torch.clamp(scale * (dst + 0.5) - 0.5, min=0.0)
    i0 = torch.floor(src).to(torch.int64)
    i1 = torch.minimum(i0 + 1, size - 1)
    w1 = src - i0.to(torch.float32)
    return i0, i1, 1.0 - w1, w1


def bilinear_resize(x: Any, size: tuple[int, int]) -> Any:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for NCHW ``x``, as gathers.

    Args:
        x: ``[N, C, H, W]`` float tensor (``H``, ``W`` may be dynamic under export).
        size: Output ``(height, width)``.
    """
    y0, y1, wy0, wy1 = _axis(x.shape[-2], size[0], x)
    x0, x1, wx0, wx1 = _axis(x.shape[-1], size[1], x)
    rows = x.index_select(-2, y0) * wy0[:, None] + x.index_select(-2, y1) * wy1[:, None]
    return rows.index_select(-1, x0) * wx0 + rows.index_select(-1, x1) * wx1
