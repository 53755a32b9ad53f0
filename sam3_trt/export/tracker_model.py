"""SAM3's video tracker: build it (full or tiny, seeded random weights), load ``tracker.*`` weights, constants.

The tracker (``sam3.model.sam3_tracking_predictor.Sam3TrackerPredictor``, built by upstream's ``build_tracker``)
conditions each frame's features on memories of earlier frames, predicts each object's mask with a SAM-style head
and encodes the result into a new memory. :mod:`.tracker_wrappers` cuts it into graphs, :mod:`.tracker_parity`
checks them against upstream's methods, :mod:`.tracker_export` writes them. Rotary attention is switched to its
real formulation (``use_rope_real``, upstream's own alternative: the complex one does not export).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import Sam3TrtError
from ..specs import LOW_RES
from .patches import cpu_compat, swap_attr

#: Tiny tracker: the same classes, one memory-attention layer, narrower feed-forward, one fuser block.
TINY_TRACKER_OVERRIDES: dict[str, dict[str, Any]] = {
    "TransformerEncoderCrossAttention": {"num_layers": 1},
    "TransformerDecoderLayerv2": {"dim_feedforward": 256},
    "SimpleFuser": {"num_layers": 1},
}

#: Side of the tracker's top feature level (1008 / 14; its low-resolution masks are 4x that).
FEAT_SIDE = LOW_RES // 4


@contextlib.contextmanager
def _tracker_overrides(variant: str) -> Iterator[None]:
    from .model import _forcing, import_sam3_builder

    model_builder = import_sam3_builder()
    with contextlib.ExitStack() as stack:
        if variant == "tiny":
            for name, overrides in TINY_TRACKER_OVERRIDES.items():
                cls = getattr(model_builder, name)
                stack.enter_context(swap_attr(model_builder, name, _forcing(cls, overrides)))
        yield


def build_tracker(variant: str = "full", seed: int = 0) -> Any:
    """Build sam3's tracker (eval mode, CPU) with deterministic random weights.

    Args:
        variant: ``"full"`` (upstream's tracker, 11.7 M parameters) or ``"tiny"`` (same classes, reduced).
        seed: Seed for every parameter.

    Returns:
        A ``Sam3TrackerPredictor`` whose rotary attention uses its real formulation.
    """
    from .model import VARIANTS, import_sam3_builder

    if variant not in VARIANTS:
        raise Sam3TrtError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    import torch

    model_builder = import_sam3_builder()
    torch.manual_seed(seed)
    with cpu_compat("cpu"), _tracker_overrides(variant):
        tracker = model_builder.build_tracker(apply_temporal_disambiguation=True)
    use_real_rope(tracker)
    tracker = tracker.eval()
    bad = [n for n, p in tracker.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"non-finite tracker parameters after init: {bad}")
    return tracker


def use_real_rope(tracker: Any) -> None:
    """Switch every rotary attention to upstream's real-valued formulation (bit-identical in eager).

    Torch's ONNX exporter has no decomposition for complex tensors; ``use_rope_real`` is upstream's own
    path for that, selected at construction in upstream's builder. Setting it after construction keeps
    the weights and the frequencies unchanged.
    """
    from sam3.sam.transformer import RoPEAttention

    for module in tracker.modules():
        if isinstance(module, RoPEAttention):
            module.use_rope_real = True
            module.freqs_cis_real = module.freqs_cis.real
            module.freqs_cis_imag = module.freqs_cis.imag


def model_builder_position_encoding() -> Any:
    """The sine position encoding upstream's vision neck uses (tracker levels included)."""
    from .model import import_sam3_builder

    return import_sam3_builder()._create_position_encoding(precompute_resolution=None)


def grid_pos(encoding: Any, channels: int, side: int) -> Any:
    """``encoding``'s sine position encoding of a ``side`` x ``side`` grid of ``channels`` channels, ``[1,C,side,side]``.

    Upstream recomputes it on every call; the graphs take it as a constant and the video runtime computes it once
    per clip.
    """
    import torch

    with cpu_compat("cpu"):
        return encoding(torch.zeros(1, channels, side, side)).detach().clone()


def identity_cuda(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.Tensor.cuda`` for CPU runs (patched in with :func:`~sam3_trt.export.patches.swap_attr`).

    Upstream moves offloaded memories back with ``.cuda()``; on a CPU run they are already here.
    """
    return self


def load_tracker(
    variant: str = "full",
    checkpoint: Any = None,
    seed: int = 0,
    allow_missing: bool = False,
) -> tuple[Any, Any]:
    """The tracker with weights from the official ``sam3.pt`` layout (``tracker.*`` keys), or random.

    Args:
        variant: ``"full"`` or ``"tiny"``.
        checkpoint: ``sam3.pt`` (or ``.safetensors``); ``None`` keeps the seeded random weights.
        seed: Seed of the random weights.
        allow_missing: Keep random values for tracker keys the checkpoint lacks instead of failing.

    Returns:
        ``(tracker, WeightsOrigin)``.
    """
    import dataclasses

    from .model import WeightsOrigin, load_checkpoint_into, read_checkpoint

    if checkpoint is not None:
        read_checkpoint(checkpoint, "tracker.")  # a bad file fails before the build
    tracker = build_tracker(variant, seed)
    if checkpoint is None:
        return tracker, WeightsOrigin(kind="random", variant=variant, seed=seed)
    origin = load_checkpoint_into(tracker, checkpoint, allow_missing=allow_missing, prefix="tracker.")
    return tracker, dataclasses.replace(origin, variant=variant)


def tracker_from_manifest(manifest: Any) -> tuple[Any, Any]:
    """Rebuild the eager tracker a ``--video`` export was made from (seeded random weights or its checkpoint).

    Args:
        manifest: Export (or engine) manifest with a ``video`` entry.

    Returns:
        ``(tracker, WeightsOrigin)``.
    """
    from pathlib import Path

    from .model import check_checkpoint_origin

    video = manifest.get("video")
    if not video:
        raise Sam3TrtError("these artifacts hold no tracker graphs: export with --video for clicks and tracking")
    weights = video.get("weights", {})
    variant = weights.get("variant") or "full"
    if weights.get("kind") == "random":
        return load_tracker(variant, seed=int(weights.get("seed", 0)))
    path = weights.get("path")
    if not path or not Path(path).is_file():
        raise Sam3TrtError(
            f"the tracker was exported from checkpoint {path}, which is not on this machine; copy it there"
        )
    check_checkpoint_origin(weights, path, "the recorded tracker checkpoint", "these artifacts' tracker", "")
    return load_tracker(variant, checkpoint=path, allow_missing=bool(weights.get("missing_keys")))


def check_video_model(model: Any) -> None:
    """Refuse an image model without the tracker's neck levels (built without ``video=True``)."""
    if getattr(model.backbone.vision_backbone, "sam2_convs", None) is None:
        raise Sam3TrtError(
            "the video graphs need the vision neck's tracker levels (sam2_convs): load the model with video=True "
            "(sam3-trt export --video)"
        )
