"""Helpers the click tests share: upstream's eager ``predict_inst`` and the comparison of its three outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from sam3_trt.compare import check_outputs
from sam3_trt.tolerances import TOLERANCES

#: The FP32 bar of clicks (graphs vs upstream's eager predict_inst).
TOLS = TOLERANCES["fp32"]["predict_inst"]
NAMES = ("masks", "iou_predictions", "low_res_masks")


def run_eager(model: Any, state: dict, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upstream's ``model.predict_inst(state, **kwargs)`` on the CPU."""
    import torch

    from sam3_trt.export.patches import cpu_compat

    with torch.inference_mode(), cpu_compat():
        return model.predict_inst(state, **kwargs)


def assert_same_clicks(label: str, expected: Any, got: Any) -> list[Any]:
    """Both sides' ``(masks, iou_predictions, low_res_masks)``: same shapes, float32, within :data:`TOLS`."""
    ref, cand = dict(zip(NAMES, expected, strict=True)), dict(zip(NAMES, got, strict=True))
    assert {k: np.shape(v) for k, v in cand.items()} == {k: np.shape(v) for k, v in ref.items()}, label
    assert all(np.asarray(v).dtype == np.float32 for v in cand.values()), label
    checks = check_outputs(ref, {k: np.asarray(v) for k, v in cand.items()}, TOLS)
    assert all(c.passed for c in checks), (label, [c for c in checks if not c.passed])
    return checks
