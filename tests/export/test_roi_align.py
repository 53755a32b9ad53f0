"""The plugin-free RoIAlign equals torchvision's adaptive-sampling roi_align (sam3's call)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from sam3_trt.export.roi_align import roi_align  # noqa: E402

#: fp32 summation-order differences only (interpolation weights are exact)
ATOL = 1e-5


def _boxes(batch, n, size, gen):
    xy = torch.rand(batch, n, 2, generator=gen) * size * 0.9
    wh = torch.rand(batch, n, 2, generator=gen) * size * 0.6
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], -1)
    boxes[:, 0] = torch.tensor([0.0, 0.0, size, size])  # full map: ceil(72/7) = 11 samples per bin
    boxes[:, 1] = torch.tensor([10.0, 10.0, 10.3, 10.2])  # sub-pixel: roi clamped to 1
    boxes[:, 2] = torch.tensor([size - 0.5, size - 1.0, size, size])  # bottom-right edge
    return boxes


@pytest.mark.parametrize("size", [72, 20])
def test_matches_torchvision_for_boxes_of_every_size(size):
    gen = torch.Generator().manual_seed(size)
    feats = torch.randn(3, 16, size, size, generator=gen)
    boxes = _boxes(3, 6, size, gen)
    ref = torchvision.ops.roi_align(feats, list(boxes), 7)
    out = roi_align(feats, boxes, 7)
    assert out.shape == ref.shape == (18, 16, 7, 7)
    assert (out - ref).abs().max().item() <= ATOL


def test_a_fixed_sampling_grid_would_not_match():
    # guards the test above: torchvision's adaptive sampling really differs from a fixed 2x2 grid
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 4, 72, 72, generator=gen)
    boxes = torch.tensor([[[0.0, 0.0, 72.0, 72.0]]])
    adaptive = torchvision.ops.roi_align(feats, list(boxes), 7)
    fixed = torchvision.ops.roi_align(feats, list(boxes), 7, sampling_ratio=2)
    assert (adaptive - fixed).abs().max().item() > 100 * ATOL
    assert (roi_align(feats, boxes, 7) - adaptive).abs().max().item() <= ATOL
