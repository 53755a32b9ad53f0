"""sam3-trt: SAM3 on TensorRT.

Stages: :mod:`sam3_trt.export` (three ONNX graphs with parity), :mod:`sam3_trt.engines` (TensorRT and
TensorRT for RTX engines), :mod:`sam3_trt.runtime` (drop-in ``Sam3Processor``), :mod:`sam3_trt.calibration`;
:mod:`sam3_trt.testing` holds the TensorRT/CUDA doubles CI runs the GPU path through.
Importing this package needs only numpy: torch, sam3, onnxruntime and TensorRT are imported lazily by
the functions that use them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Sam3Processor", "__version__"]


def __getattr__(name: str):  # lazy: `import sam3_trt` stays light
    if name == "Sam3Processor":
        from .runtime.processor import Sam3Processor

        return Sam3Processor
    raise AttributeError(f"module 'sam3_trt' has no attribute {name!r}")
