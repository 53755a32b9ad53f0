"""Image input handling and sam3's pre-processing, as plain functions.

sam3 squash-resizes to ``resolution x resolution`` (no aspect-preserving pad): uint8, antialiased
bilinear resize, then ``(x / 255 - 0.5) / 0.5``. With torch installed we call the same torchvision v2
functions as upstream's ``Sam3Processor.transform`` (bit-identical); without torch we resize with
PIL's antialiased bilinear filter (within 1/255 per pixel, see the tests).

Accepted images (upstream takes PIL and tensors, and reads the size of HWC numpy arrays wrongly):

* ``PIL.Image``: any mode; grayscale and palette become RGB, alpha is dropped, 16-bit (``I;16``) scaled.
* numpy arrays: ``HxW`` or ``HxWxC`` with C in 1, 3, 4 (channels last, as numpy images are).
* torch tensors: ``CxHxW`` or ``HxW`` (channels first, as torch images are).
* dtypes: ``uint8``; ``uint16`` (and ``int32`` from 16-bit PIL files) scaled by ``>> 8`` like torchvision;
  floats must lie in ``[0, 1]`` and are scaled by 255 (values outside are an error, never clipped).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from .arrays import is_torch_tensor


def open_image(path: str | os.PathLike[str]) -> Any:
    """Open an image file with PIL, with a clear error for unreadable or corrupt files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise Sam3TrtError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Sam3TrtError(f"cannot read image {path} ({exc}); pass a PNG/JPEG/TIFF/... file PIL can open") from None


def to_uint8_hwc(image: Any) -> np.ndarray:
    """Any accepted image as a ``uint8`` ``HxWx3`` numpy array (RGB).

    Raises:
        Sam3TrtError: unsupported type, layout or dtype, zero-size image, float values outside [0, 1].
    """
    arr = _as_array(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise Sam3TrtError(
            f"image has shape {arr.shape}; expected HxW or HxWxC with C in 1, 3, 4 (numpy) or CxHxW (torch)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise Sam3TrtError(f"image is empty (height x width = {arr.shape[0]} x {arr.shape[1]}); pass a non-empty image")
    arr = _scale_to_uint8(arr)
    channels = arr.shape[2]
    if channels in (1, 2):  # gray or gray + alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif channels == 4:  # drop alpha, like PIL's convert("RGB")
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _as_array(image: Any) -> np.ndarray:
    if is_torch_tensor(image):
        t = image.detach().cpu()
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        elif t.ndim != 2:
            raise Sam3TrtError(f"image tensor has shape {tuple(image.shape)}; expected CxHxW or HxW")
        return t.numpy()
    if isinstance(image, np.ndarray):
        return image
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            return np.asarray(image)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        return np.asarray(image)
    raise Sam3TrtError(f"image must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:  # PIL "I" from 16-bit files
        return (arr.astype(np.uint16) >> 8).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not (np.isfinite(arr).all() and lo >= 0.0 and hi <= 1.0):
            raise Sam3TrtError(
                f"float image values span [{lo:g}, {hi:g}]; float images must lie in [0, 1] "
                "(divide 0-255 data by 255, or pass uint8)"
            )
        # torchvision's float -> uint8 conversion: x * (255 + 1 - 1e-3), truncated
        return (arr * arr.dtype.type(256.0 - 1e-3)).astype(np.uint8)
    raise Sam3TrtError(f"image dtype {arr.dtype} is not supported; use uint8, uint16 or float in [0, 1]")


def preprocess(image: Any, resolution: int = 1008, use_torch: bool | None = None) -> np.ndarray:
    """sam3's pre-processing: ``float32 [1, 3, resolution, resolution]``, normalised to [-1, 1].

    Args:
        image: Any accepted image (module docstring).
        resolution: Square side the graphs take.
        use_torch: Use torchvision (bit-identical to upstream); default: when torch is installed.
    """
    hwc = to_uint8_hwc(image)
    if use_torch is None:
        from .arrays import installed

        use_torch = installed("torch") and installed("torchvision")
    if use_torch:
        import torch
        from torchvision.transforms import v2

        chw = torch.from_numpy(hwc if hwc.flags.writeable else hwc.copy()).permute(2, 0, 1)
        resized = v2.functional.resize(
            chw, [resolution, resolution], interpolation=v2.InterpolationMode.BILINEAR, antialias=True
        )
        scaled = v2.functional.to_dtype(resized, torch.float32, scale=True)
        normed = v2.functional.normalize(scaled, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
        return normed.unsqueeze(0).numpy()
    resized = resize_bilinear_aa(hwc, resolution, resolution)
    scaled = resized.astype(np.float32) * np.float32(1.0 / 255.0)  # torchvision multiplies by 1/255 (not divides)
    return ((scaled - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)[None].copy()


def resize_bilinear_aa(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision's antialiased bilinear resize of a ``uint8`` ``HxWxC`` image, bit for bit, without torch.

    Upstream's pre-processing resizes the uint8 image (``v2.Resize`` on a uint8 tensor); on x86 CPUs torch runs
    that through its AVX2 uint8 kernel (ported from Pillow-SIMD): a horizontal then a vertical pass, each with
    triangle weights widened by the scale when shrinking, rounded to int16 fixed point at the largest precision
    that keeps the biggest weight under 2^15, accumulated in integers and rounded back to uint8 between passes.
    This is that arithmetic in numpy, so the torch-free runtime (serving has no torch) feeds the graphs the
    pixels upstream feeds them (checked equal to torchvision's in the tests). Pillow's resize differs by up to
    2 levels: its weights have another fixed-point precision.

    Args:
        image: ``uint8`` ``HxWxC``.
        height: Output height.
        width: Output width.
    """
    out = np.asarray(image, dtype=np.uint8)
    if out.shape[1] != width:
        out = _resample_axis(out, 1, width)
    if out.shape[0] != height:
        out = _resample_axis(out, 0, height)
    return out


def _resample_axis(src: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One pass of :func:`resize_bilinear_aa` along ``axis``."""
    in_size = src.shape[axis]
    scale = in_size / out_size
    support = max(scale, 1.0)  # bilinear's half-width is 1, widened by the scale when shrinking (antialias)
    inverse = 1.0 / scale if scale >= 1.0 else 1.0
    centers = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    taps = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - first
    j = np.arange(int(taps.max()))[None, :]
    weights = np.where(
        j < taps[:, None], np.maximum(0.0, 1.0 - np.abs((j + first[:, None] - centers[:, None] + 0.5) * inverse)), 0.0
    )
    totals = weights.sum(axis=1, keepdims=True)
    weights = weights / np.where(totals == 0, 1.0, totals)
    precision = 0  # the largest (below 22) that keeps the biggest weight, doubled, under 2^15
    while precision < 21 and int(0.5 + weights.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    # int32 as torch's kernel: 255 x the weights' sum (about 2^precision <= 2^21) stays far below 2^31
    fixed = np.trunc(weights * (1 << precision) + 0.5).astype(np.int32)  # weights are >= 0: round half up
    moved = np.moveaxis(src, axis, 0).astype(np.int32)  # the resampled axis first: each tap takes whole rows
    acc = np.full((out_size, *moved.shape[1:]), 1 << (precision - 1), np.int32)
    column = (-1,) + (1,) * (moved.ndim - 1)
    for tap in range(fixed.shape[1]):
        acc += moved[np.minimum(first + tap, in_size - 1)] * fixed[:, tap].reshape(column)
    acc = np.moveaxis(acc, 0, axis)
    return np.clip(acc >> precision, 0, 255).astype(np.uint8)
