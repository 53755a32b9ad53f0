"""The eager sam3 model through the export wrappers: the parity reference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...specs import SPECS
from .base import Backend


class TorchBackend(Backend):
    """The eager sam3 model, through the export wrappers (the parity reference).

    Args:
        model: sam3 image model (:func:`sam3_trt.export.model.load_model`).
        device: Torch device the model is on.
    """

    name = "torch"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        super().__init__()
        from ...export.wrappers import WRAPPERS

        self.device = device
        self.modules = {g: cls(model).eval() for g, cls in WRAPPERS.items()}

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        import torch

        from ...export.patches import cpu_compat

        spec = SPECS[graph]
        args = [
            x.to(self.device)
            if isinstance(x, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            for x in (feeds[n] for n in spec.input_names)
        ]
        with torch.inference_mode(), cpu_compat(self.device):
            outs = self.modules[graph](*args)
        return dict(zip(spec.output_names, outs, strict=True))
