"""sam3-trt: SAM3 (Segment Anything 3) on TensorRT.

Public API (imported lazily: ``import sam3_trt`` needs only numpy; torch, sam3, onnxruntime and TensorRT load
inside the functions that use them):

* :func:`build_sam3_image_model` (:mod:`sam3_trt.runtime.model_builder`): upstream's builder call shape, a
  graph-backed model with ``predict_inst`` (swap the builder's import too).
* :class:`Sam3Processor` (:mod:`sam3_trt.runtime.processor`): upstream's image processor, on graphs or engines;
  with ``interactive=True`` also upstream's clicks (``predict_inst``).
* :class:`Sam3AutomaticMaskGenerator` (:mod:`sam3_trt.runtime.automatic`): SAM2's automatic masks on the click head.
* :class:`Sam3VideoPredictor` (:mod:`sam3_trt.video.predictor`): upstream's video predictor, on graphs or engines.

Stages, one folder each (a stage uses another's public names only):

* :mod:`sam3_trt.export`: sam3 to ONNX graphs (image and video tracker), checked against eager on every run.
* :mod:`sam3_trt.engines`: the FP16 pass, precision policies, TensorRT and TensorRT for RTX engine builds.
* :mod:`sam3_trt.calibration`: data-driven FP16 keep-lists and INT8/FP8 Q/DQ graphs.
* :mod:`sam3_trt.runtime`: the image processor, its backends (ONNX Runtime, TensorRT, eager) and ``segment``.
* :mod:`sam3_trt.video`: the video predictor, tracker steps on graphs, ``track`` and ``bench-video``.
* :mod:`sam3_trt.datasets`: ``label`` whole image sets into COCO files (resumable shards) and ``eval`` runs.
* :mod:`sam3_trt.serving`: Triton Inference Server (PyTriton), its client and model repositories.
* :mod:`sam3_trt.checks`: parity against eager, bench, inspect, doctor and the staged GPU check.
* :mod:`sam3_trt.offline`: the wheel bundle for GPU machines without network.
* :mod:`sam3_trt.cli`: the ``sam3-trt`` command, thin click commands over the stages.
* :mod:`sam3_trt.testing`: TensorRT / cuda-python / torch.cuda doubles CI runs the GPU path through.

The top level holds the shared core: :mod:`~sam3_trt.specs` (graph I/O as data), :mod:`~sam3_trt.tolerances`,
:mod:`~sam3_trt.compare`, :mod:`~sam3_trt.manifest`, :mod:`~sam3_trt.errors`, :mod:`~sam3_trt.device`,
:mod:`~sam3_trt.ort`, :mod:`~sam3_trt.rle`, :mod:`~sam3_trt.paths`, :mod:`~sam3_trt.weights` (weight
digests), and :mod:`sam3_trt.assets`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Sam3AutomaticMaskGenerator", "Sam3Processor", "Sam3VideoPredictor", "__version__", "build_sam3_image_model"]

#: Public name -> the module that defines it (imported on first use).
_LAZY = {
    "Sam3Processor": "sam3_trt.runtime.processor",
    "build_sam3_image_model": "sam3_trt.runtime.model_builder",
    "Sam3AutomaticMaskGenerator": "sam3_trt.runtime.automatic",
    "Sam3VideoPredictor": "sam3_trt.video.predictor",
}


def __getattr__(name: str) -> Any:  # lazy: `import sam3_trt` stays light
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sam3_trt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
