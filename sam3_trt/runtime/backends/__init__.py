"""Backends: run a graph by name with named inputs, get named outputs. One module per backend.

* :mod:`.onnxruntime`: :class:`OnnxRuntimeBackend`, the exported ONNX graphs (CPU by default).
* :mod:`.tensorrt`: :class:`TensorRTBackend`, TensorRT or TensorRT for RTX engines on an NVIDIA GPU, with
  device memory from :mod:`sam3_trt.runtime.device_memory` (torch or cuda-python).
* :mod:`.torch`: :class:`TorchBackend`, the eager sam3 model through the export wrappers (the reference).
* :mod:`.base`: :class:`Backend`, the shared interface (spec validation, locking, ``close()``).

Backends import their heavy dependencies (onnxruntime, TensorRT, torch) only when constructed.
"""

from .base import Backend
from .onnxruntime import OnnxRuntimeBackend
from .tensorrt import TensorRTBackend
from .torch import TorchBackend

__all__ = ["Backend", "OnnxRuntimeBackend", "TensorRTBackend", "TorchBackend"]
