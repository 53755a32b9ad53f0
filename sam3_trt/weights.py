"""Weight fingerprints: which tensors an export was made from, checked when a client loads a state dict.

An export records, per tensor of the image model (and of the video tracker), a short sha256 of its dtype,
shape and bytes (``manifest["weight_digests"]["image"]`` and ``["tracker"]``; FP16, quantized and engine
folders copy them). :func:`check_state_dict` compares a state dict against that record, so
``build_sam3_image_model(...).load_state_dict(sd)`` accepts the weights the graphs were made from and refuses
any others in one line: the graphs cannot take new weights, and running them as if they had would be silent
corruption.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .errors import Sam3TrtError

#: Key prefixes of the official ``sam3.pt`` layout (``{"model": {"detector.*": ..., "tracker.*": ...}}``).
DETECTOR_PREFIX = "detector."
TRACKER_PREFIX = "tracker."
#: Where upstream's image model keeps the tracker it clicks with (``enable_inst_interactivity=True``).
INTERACTIVE_PREFIX = "inst_interactive_predictor.model."
#: Hex digits kept per tensor: 64 bits tell weights apart; the record stays small for 1,500 tensors.
DIGEST_CHARS = 16


def tensor_digest(tensor: Any) -> str:
    """Short sha256 of one tensor's dtype, shape and bytes (torch tensor or numpy array).

    Args:
        tensor: The tensor; moved to the CPU and made contiguous for hashing.
    """
    import numpy as np

    if hasattr(tensor, "detach"):  # torch: view the bytes whatever the dtype (bfloat16 has no numpy type)
        import torch

        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes()
        dtype, shape = str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape)
    else:
        arr = np.ascontiguousarray(tensor)
        data, dtype, shape = arr.tobytes(), str(arr.dtype), arr.shape
    h = hashlib.sha256(f"{dtype}|{','.join(map(str, shape))}|".encode())
    h.update(data)
    return h.hexdigest()[:DIGEST_CHARS]


def tensor_digests(state_dict: Mapping[str, Any]) -> dict[str, str]:
    """:func:`tensor_digest` of every entry, keys sorted (what an export records).

    Args:
        state_dict: ``module.state_dict()`` or a checkpoint's tensors.
    """
    return {k: tensor_digest(state_dict[k]) for k in sorted(state_dict)}


def split_state_dict(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(image-model tensors, tracker tensors)`` of a state dict in any of the layouts clients pass.

    Accepted: the official checkpoint (``{"model": {...}}`` or its inner dict, keys ``detector.*`` and
    ``tracker.*``), or upstream's image model's own ``state_dict()`` (tracker keys under
    ``inst_interactive_predictor.model.*`` when built with ``enable_inst_interactivity=True``).

    Args:
        state_dict: The mapping given to ``load_state_dict``.
    """
    inner = state_dict.get("model") if isinstance(state_dict.get("model"), Mapping) else state_dict
    if any(k.startswith(DETECTOR_PREFIX) for k in inner):
        detector = {k[len(DETECTOR_PREFIX) :]: v for k, v in inner.items() if k.startswith(DETECTOR_PREFIX)}
        tracker = {k[len(TRACKER_PREFIX) :]: v for k, v in inner.items() if k.startswith(TRACKER_PREFIX)}
        others = [k for k in inner if not k.startswith((DETECTOR_PREFIX, TRACKER_PREFIX))]
        detector.update({k: inner[k] for k in others})  # reported as unexpected by the check
        return detector, tracker
    detector = {k: v for k, v in inner.items() if not k.startswith("inst_interactive_predictor.")}
    tracker = {k[len(INTERACTIVE_PREFIX) :]: v for k, v in inner.items() if k.startswith(INTERACTIVE_PREFIX)}
    return detector, tracker


def check_state_dict(
    given: Mapping[str, Any],
    record: Mapping[str, str],
    part: str,
    folder: str,
    strict: bool = True,
    known_extra: tuple[str, ...] = (),
) -> tuple[list[str], list[str]]:
    """Compare ``given`` tensors with an export's record; returns ``(missing, unexpected)`` keys.

    Args:
        given: One part of :func:`split_state_dict`.
        record: The export's ``tensor_sha256`` for that part.
        part: ``"image model"`` or ``"tracker"`` (for the message).
        folder: The export or engine folder (for the message).
        strict: Refuse missing or unexpected keys (as ``torch.nn.Module.load_state_dict``).
        known_extra: Keys the export already knew the checkpoint has and the model does not (its
            ``unexpected_keys``): neither checked nor reported.

    Raises:
        Sam3TrtError: a tensor differs from the record (always), or keys are missing or unexpected (``strict``).
    """
    differ = [k for k in sorted(given) if k in record and tensor_digest(given[k]) != record[k]]
    if differ:
        raise Sam3TrtError(
            f"load_state_dict: {len(differ)} {part} tensor(s) differ from the weights {folder} was exported from "
            f"(first: {differ[0]}); the graphs cannot take other weights: export these "
            f"(`sam3-trt export --checkpoint CKPT --out DIR`) and build the model from that folder"
        )
    missing = [k for k in record if k not in given]
    unexpected = [k for k in sorted(given) if k not in record and k not in known_extra]
    if strict and (missing or unexpected):
        what = [f"{len(missing)} missing (first: {missing[0]})"] if missing else []
        what += [f"{len(unexpected)} unexpected (first: {unexpected[0]})"] if unexpected else []
        raise Sam3TrtError(
            f"load_state_dict: {part} keys {' and '.join(what)} against the weights {folder} was exported from; "
            "pass the full state dict of those weights (or strict=False to check only the keys given)"
        )
    return missing, unexpected
