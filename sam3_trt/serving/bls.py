"""The ``sam3`` Python-backend model of a Triton model repository (``triton-repo``).

Inside ``tritonserver``, :class:`TritonPythonModel` runs the same :class:`~.handler.Sam3Handler` as
``serve``, over a :class:`~sam3_trt.Sam3Processor` whose backend is :class:`BlsBackend`: each graph run
is a BLS (business logic scripting) request to the ``vision_encoder``, ``text_encoder`` or ``decoder``
model of the same repository (with ``--clicks``: ``video_vision_encoder`` in place of ``vision_encoder``, and
``interactive_mask_head``), which Triton runs on its TensorRT or ONNX Runtime backend.

``triton_python_backend_utils`` exists only inside Triton's Python backend: it is imported when the model
initialises, never at import time of this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..runtime.backends.base import Backend
from ..specs import ALL_SPECS
from .contract import INPUTS


class BlsBackend(Backend):
    """Runs each graph as a BLS request to the model of the same name.

    Args:
        pb_utils: Triton's ``triton_python_backend_utils`` module.
        folder: Folder holding the tokenizer file (the ``sam3`` model's version folder).
    """

    name = "triton-bls"

    def __init__(self, pb_utils: Any, folder: str | Path) -> None:
        super().__init__()
        self.pb_utils = pb_utils
        self.folder = Path(folder)
        #: the graph models of this repository (``<repo>/<graph>/config.pbtxt``; the click graphs with --clicks)
        repo = self.folder.parent.parent
        self.graphs = tuple(g for g in ALL_SPECS if (repo / g / "config.pbtxt").is_file())

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        spec = ALL_SPECS[graph]
        pb = self.pb_utils
        request = pb.InferenceRequest(
            model_name=graph,
            requested_output_names=spec.output_names,
            inputs=[pb.Tensor(name, np.ascontiguousarray(feeds[name])) for name in spec.input_names],
        )
        response = request.exec()
        if response.has_error():
            raise Sam3TrtError(f"BLS request to model {graph} failed: {response.error().message()}")
        out = {}
        for name in spec.output_names:
            tensor = pb.get_output_tensor_by_name(response, name)
            if tensor is None:
                raise Sam3TrtError(f"model {graph} returned no output {name}: is its config.pbtxt the one written?")
            out[name] = tensor.as_numpy()
        return out


class TritonPythonModel:
    """Triton Python-backend model ``sam3`` (``model.py`` re-exports this class)."""

    def initialize(self, args: dict[str, str]) -> None:
        """Build the processor over BLS; ``args`` is what Triton passes (``model_repository``, ...)."""
        import triton_python_backend_utils as pb_utils

        from ..runtime.processor import Sam3Processor
        from .handler import Sam3Handler
        from .triton_repo import CLICKS_PARAMETER

        self.pb_utils = pb_utils
        folder = Path(args["model_repository"]) / args["model_version"]
        config = json.loads(args["model_config"])
        self.output_dtypes = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}
        clicks = config.get("parameters", {}).get(CLICKS_PARAMETER, {}).get("string_value") == "true"
        processor = Sam3Processor(None, backend=BlsBackend(pb_utils, folder), interactive=clicks)
        self.handler = Sam3Handler(processor)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer a batch of requests, one response each (errors in each response's ``error`` output)."""
        pb = self.pb_utils
        inputs = []
        for request in requests:
            arrays = {}
            for name in (t.name for t in INPUTS):
                tensor = pb.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    arrays[name] = tensor.as_numpy()
            inputs.append(arrays)
        responses = []
        for outputs in self.handler(inputs):
            tensors = [pb.Tensor(name, value.astype(self.output_dtypes[name])) for name, value in outputs.items()]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        """Release the processor."""
        self.handler.processor.close()
