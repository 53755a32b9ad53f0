"""The ``sam3`` Triton model's inputs and outputs, declared once as data.

Shapes leave out Triton's batch axis (``max_batch_size > 0``): each request carries one image. Strings
travel as Triton ``BYTES`` (numpy ``object`` arrays of ``bytes``). Errors a request causes (a corrupt
image, a NaN box, too many prompts) come back in its own ``error`` output, so one bad request in a
dynamic batch never fails the requests batched with it; an empty ``error`` means success.

Detections follow the convention of TensorRT's detection plugins: ``num_detections`` says how many rows
of the per-detection outputs are real; those outputs always have at least one row (PyTriton's proxy
cannot carry zero-size tensors), padding when there is no detection.

This module imports only numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Name of the model ``serve`` binds and ``triton-repo`` writes.
MODEL_NAME = "sam3"
#: ``prompt_index`` of the masks a click request returns.
CLICKS_INDEX = -2
#: Mask encodings a request may ask for (``mask_format``).
MASK_FORMATS = ("rle", "bitmask")


@dataclasses.dataclass(frozen=True)
class ServeTensor:
    """One input or output of the ``sam3`` model.

    Args:
        name: Tensor name on the wire.
        dtype: numpy dtype (``np.object_`` for Triton ``BYTES``).
        shape: Per-request shape, ``-1`` for variable axes (Triton's batch axis not included).
        optional: Inputs only: a request may leave it out.
        doc: What it holds.
    """

    name: str
    dtype: type
    shape: tuple[int, ...]
    optional: bool = False
    doc: str = ""

    @property
    def triton_dtype(self) -> str:
        """Triton's name for the dtype (``TYPE_`` prefix left out): ``BYTES``, ``FP32``, ..."""
        return TRITON_DTYPES[np.dtype(self.dtype).str[1:]]


#: numpy dtype code -> Triton dtype name (the subset the contract uses).
TRITON_DTYPES = {"O": "BYTES", "f4": "FP32", "i4": "INT32", "u1": "UINT8", "b1": "BOOL"}

INPUTS: tuple[ServeTensor, ...] = (
    ServeTensor("image", np.object_, (1,), doc="encoded image file (PNG, JPEG, ...) as bytes"),
    ServeTensor("prompts", np.object_, (-1,), optional=True, doc="text prompts, UTF-8; one decoder batch"),
    ServeTensor("boxes", np.float32, (-1, 4), optional=True, doc="box prompts, pixel x0, y0, x1, y1"),
    ServeTensor("box_labels", np.bool_, (-1,), optional=True, doc="per box: True positive (default), False negative"),
    ServeTensor(
        "points",
        np.float32,
        (-1, 2),
        optional=True,
        doc="clicks, pixel x, y (a server started with --clicks); answered with upstream's predict_inst masks",
    ),
    ServeTensor("point_labels", np.int32, (-1,), optional=True, doc="per point: 1 positive (default), 0 negative"),
    ServeTensor("multimask", np.bool_, (1,), optional=True, doc="clicks: three masks instead of one (default False)"),
    ServeTensor("threshold", np.float32, (1,), optional=True, doc="keep detections scoring above it (default 0.5)"),
    ServeTensor("mask_format", np.object_, (1,), optional=True, doc="b'rle' (default) or b'bitmask'"),
    ServeTensor(
        "max_detections",
        np.int32,
        (1,),
        optional=True,
        doc="return at most this many detections, the best scores (default and cap: the server's --max-detections)",
    ),
)

OUTPUTS: tuple[ServeTensor, ...] = (
    ServeTensor("error", np.object_, (1,), doc="empty on success, else one line naming the bad input and the fix"),
    ServeTensor("num_detections", np.int32, (1,), doc="K: rows of the per-detection outputs that are detections"),
    ServeTensor("prompt_index", np.int32, (-1,), doc="per detection: index into prompts (-1: boxes only, -2: clicks)"),
    ServeTensor("scores", np.float32, (-1,), doc="per detection: score (clicks: the mask's predicted IoU)"),
    ServeTensor("boxes_xyxy", np.float32, (-1, 4), doc="per detection: pixel box x0, y0, x1, y1"),
    ServeTensor("masks_rle", np.object_, (-1,), doc="per detection: COCO compressed RLE as JSON (rle format)"),
    ServeTensor("masks", np.uint8, (-1, -1, -1), doc="per detection: HxW 0/1 mask (bitmask format, else one 1x1 pad)"),
)


def input_spec(name: str) -> ServeTensor:
    """The input called ``name``."""
    return next(t for t in INPUTS if t.name == name)
