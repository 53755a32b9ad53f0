"""COCO run-length encoding of binary masks, both forms pycocotools reads, without pycocotools.

Uncompressed: ``{"size": [h, w], "counts": [int, ...]}``, column-major run lengths starting with zeros.
Compressed: the same runs as COCO's ASCII string (``maskApi.c`` ``rleToString``): each count, after the
third, is stored as the difference to the count two before, in 5-bit groups with a continuation bit,
offset by 48. The compressed form is what ``serve`` returns: a few hundred bytes for a typical mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import Sam3TrtError


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of a 2-D mask."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def compress_counts(counts: list[int]) -> str:
    """Run lengths -> COCO's compressed string."""
    chars = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative differences end at -1
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(chars)


def decompress_counts(text: str) -> list[int]:
    """COCO's compressed string -> run lengths.

    Raises:
        Sam3TrtError: a character outside COCO's alphabet or a count cut short.
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        x = shift = 0
        while True:
            if pos >= len(text):
                raise Sam3TrtError("compressed RLE ends inside a count: the string is truncated")
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise Sam3TrtError(f"compressed RLE holds {text[pos]!r} at {pos}, outside COCO's alphabet")
            x |= (c & 0x1F) << shift
            pos += 1
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    x |= -1 << shift
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def mask_to_compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a 2-D mask (``counts`` is a str)."""
    rle = mask_to_rle(mask)
    return {"size": rle["size"], "counts": compress_counts(rle["counts"])}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Either RLE form -> ``bool`` ``HxW`` mask.

    Raises:
        Sam3TrtError: the runs do not add up to ``height * width``.
    """
    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        counts = decompress_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    if sum(counts) != height * width or min(counts, default=0) < 0:
        raise Sam3TrtError(f"RLE runs add up to {sum(counts)} pixels, the mask has {height}x{width}")
    values = np.zeros(height * width, dtype=bool)
    pos, value = 0, False
    for count in counts:
        values[pos : pos + count] = value
        pos += count
        value = not value
    return values.reshape((height, width), order="F")
