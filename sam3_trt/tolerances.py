"""Parity tolerances, held as data in one place.

``TOLERANCES[precision][graph][output]`` gives the largest accepted ``max_abs`` and ``rel_l2`` of a
candidate (ONNX Runtime, TensorRT) against its reference (PyTorch eager FP32) on the same inputs.
``""`` is the default for outputs without their own row (as in Polygraphy's ``CompareFunc.simple``).
Later stages add columns (``fp16``, ``int8``) next to ``fp32``; readers never hard-code numbers.

FP32 numbers: exporting changes no arithmetic, only its order (fused kernels, matmul reassociation),
so FP32 graphs must match eager to ``rel_l2 <= 1e-4`` per output (the export issue's bar). ``max_abs``
is looser where outputs are logits with large magnitude (mask logits reach |x| ~ 50 with random
weights) and ~1e-7 relative rounding differences accumulate over 32 ViT blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Tol = Mapping[str, float]

TOLERANCES: dict[str, dict[str, dict[str, Tol]]] = {
    "fp32": {
        "vision_encoder": {"": {"max_abs": 5e-3, "rel_l2": 1e-4}},
        "text_encoder": {"": {"max_abs": 1e-3, "rel_l2": 1e-4}, "text_mask": {"max_abs": 0.0, "rel_l2": 0.0}},
        "decoder": {
            "": {"max_abs": 1e-3, "rel_l2": 1e-4},
            "pred_masks": {"max_abs": 2e-2, "rel_l2": 1e-4},
            "semantic_seg": {"max_abs": 2e-2, "rel_l2": 1e-4},
        },
        # end to end: the three ONNX graphs chained vs eager sam3 Sam3Processor internals
        "pipeline": {
            "": {"max_abs": 1e-3, "rel_l2": 1e-4},
            "pred_masks": {"max_abs": 2e-2, "rel_l2": 1e-4},
            "masks_logits": {"max_abs": 1e-3, "rel_l2": 1e-4},
        },
    },
}


#: End-to-end detection parity of a processor against upstream eager ``Sam3Processor`` (same weights,
#: image and prompt), per precision. ``threshold_band``: queries whose reference score lies within this
#: distance of the threshold may be kept by one side only.
DETECTION_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {
        "threshold_band": 1e-3,
        "masks_logits_max_abs": 1e-3,
        "mask_iou_min": 0.995,
        "box_px_max": 0.5,
        "score_max_abs": 1e-4,
    },
}


def tolerance(graph: str, output: str, precision: str = "fp32", table: Mapping[str, Any] | None = None) -> Tol:
    """Tolerance row for ``output`` of ``graph`` at ``precision`` (falls back to the graph's ``""`` row).

    Args:
        graph: Graph name (``vision_encoder``, ``text_encoder``, ``decoder``) or ``pipeline``.
        output: Output tensor name.
        precision: Column of the table (``fp32``).
        table: Override table with the same layout (tests use this to prove checks can fail).
    """
    table = TOLERANCES if table is None else table
    try:
        rows = table[precision][graph]
    except KeyError:
        raise KeyError(f"no tolerances for precision={precision!r} graph={graph!r}") from None
    return rows.get(output, rows[""])
