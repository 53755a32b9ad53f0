"""Build sam3's image model on any device and load its weights.

Sources (exactly one per call):

* ``checkpoint``: the official ``sam3.pt`` layout (weights under ``"model"``, image-model keys prefixed
  ``detector.``, ``tracker.*`` ignored, as upstream's loader does), as ``.pt`` (``torch.load(weights_only=True)``)
  or ``.safetensors``. Unlike upstream (``strict=False``, missing keys printed), missing keys fail unless
  ``allow_missing``; unexpected keys are reported.
* ``from_hf``: download ``facebook/sam3`` through ``huggingface_hub`` (gated; only when asked).
* ``random``: deterministic random weights from a seed, every parameter initialised (upstream leaves
  some as ``torch.empty``: they hold whatever memory had, often NaN).

Variants: ``full`` is upstream's own builder (the real ~840 M parameter architecture); ``tiny`` runs the
same builder with reduced width and depth of the same classes, for fast tests. Both keep the graph I/O of
:mod:`sam3_trt.specs` (1008 px input, 256-wide features, 200 queries).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..assets import bpe_path
from ..errors import Sam3TrtError
from .patches import cpu_compat, swap_attr

VARIANTS = ("full", "tiny")

#: Keyword overrides per upstream class for the tiny variant (same classes, smaller).
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "ViT": {"embed_dim": 64, "depth": 2, "num_heads": 2, "global_att_blocks": (1,)},
    "VETextEncoder": {"width": 64, "heads": 2, "layers": 2},
    "TransformerEncoderFusion": {"num_layers": 1},
    "TransformerDecoder": {"num_layers": 2},
    "TransformerEncoderLayer": {"dim_feedforward": 256},
    "TransformerDecoderLayer": {"dim_feedforward": 256},
    "SequenceGeometryEncoder": {"num_layers": 1},
}

#: Parameters upstream allocates with ``torch.empty`` and never initialises, with the init we give them.
#: (sam3 0.1.4 has two; its causal-mask buffer is also ``torch.empty`` but filled. ``build_model`` checks
#: that every tensor is finite and a test checks that two builds with one seed are bit-identical.)
UNINITIALISED_PARAMS: dict[str, tuple[str, float]] = {
    "backbone.language_backbone.encoder.positional_embedding": ("normal", 0.01),
    "backbone.language_backbone.encoder.text_projection": ("normal_fan_in", 1.0),
}


@dataclasses.dataclass(frozen=True)
class WeightsOrigin:
    """Where the weights came from, as recorded in every manifest.

    Args:
        kind: ``"checkpoint"``, ``"huggingface"`` or ``"random"``.
        variant: ``"full"`` or ``"tiny"``.
        path: Checkpoint path (checkpoint and huggingface kinds).
        sha256: Checkpoint sha256 (checkpoint and huggingface kinds).
        seed: Seed (random kind).
        missing_keys: Model keys absent from the checkpoint (only with ``allow_missing``).
        unexpected_keys: Checkpoint image-model keys the model does not have.
    """

    kind: str
    variant: str
    path: str | None = None
    sha256: str | None = None
    seed: int | None = None
    missing_keys: tuple[str, ...] = ()
    unexpected_keys: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.kind == "random":
            return f"RANDOM weights (variant={self.variant}, seed={self.seed}): masks are meaningless, parity numbers are real"
        return f"{self.kind} weights from {self.path} (sha256 {self.sha256[:12] if self.sha256 else '?'}, variant={self.variant})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsOrigin:
        """Inverse of :meth:`to_dict` (a manifest's ``weights`` entry)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        for key in ("missing_keys", "unexpected_keys"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["missing_keys"] = list(self.missing_keys)
        d["unexpected_keys"] = list(self.unexpected_keys)
        return d


def _forcing(cls: Any, overrides: Mapping[str, Any]) -> Callable[..., Any]:
    def build(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(overrides)
        return cls(*args, **kwargs)

    return build


@contextlib.contextmanager
def _variant_overrides(variant: str) -> Iterator[None]:
    from sam3 import model_builder

    if variant == "full":
        yield
        return
    with contextlib.ExitStack() as stack:
        for name, overrides in TINY_OVERRIDES.items():
            cls = getattr(model_builder, name)
            stack.enter_context(swap_attr(model_builder, name, _forcing(cls, overrides)))
        yield


def import_sam3_builder() -> Any:
    """Import ``sam3.model_builder`` without its import-time warnings (CUDA autocast on a CPU machine)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sam3 import model_builder
    return model_builder


def build_model(variant: str = "full", seed: int = 0, device: str = "cpu", video: bool = False) -> Any:
    """Build sam3's image model (eval mode) with deterministic random weights.

    Args:
        variant: ``"full"`` (upstream architecture) or ``"tiny"`` (same classes, reduced).
        seed: Seed for every parameter, including the ones upstream leaves uninitialised.
        device: Torch device to build on; ``"cpu"`` works without CUDA.
        video: Also give the vision neck the tracker's levels (``sam2_convs``, as upstream's video model
            has): drawn from a seed of their own, so every other weight equals the image-only build's.

    Returns:
        A ``sam3.model.sam3_image.Sam3Image`` in eval mode.
    """
    if variant not in VARIANTS:
        raise Sam3TrtError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    import torch

    model_builder = import_sam3_builder()
    torch.manual_seed(seed)
    with cpu_compat(device), _variant_overrides(variant):
        model = model_builder.build_sam3_image_model(
            bpe_path=str(bpe_path()),
            device="cpu",
            eval_mode=True,
            checkpoint_path=None,
            load_from_HF=False,
            enable_segmentation=True,
            enable_inst_interactivity=False,
        )
    _init_uninitialised(model, seed)
    if video:
        add_tracker_neck(model, seed)
    model = model.to(device).eval()
    bad = [n for n, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"non-finite parameters after init: {bad}")
    return model


def add_tracker_neck(model: Any, seed: int) -> None:
    """Give the vision neck upstream's second set of neck convolutions (``sam2_convs``) for the tracker.

    Upstream builds them as a copy of the detector's (``add_sam2_neck``) and trains them apart; here
    they get random values of their own (uniform in +-1/sqrt(fan_in), like torch's default), so the
    tracker's features differ from the detector's as they do in a trained model.
    """
    import copy

    import torch

    neck = model.backbone.vision_backbone
    neck.sam2_convs = copy.deepcopy(neck.convs)
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for module in neck.sam2_convs.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                bound = module.weight[0].numel() ** -0.5
                for p in (module.weight, module.bias):
                    if p is not None:
                        p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)


def _init_uninitialised(model: Any, seed: int) -> None:
    import torch

    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, (how, std) in UNINITIALISED_PARAMS.items():
            if name not in params:
                raise RuntimeError(f"sam3 layout changed: parameter {name} not found")
            p = params[name]
            scale = std * (p.shape[0] ** -0.5 if how == "normal_fan_in" else 1.0)
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _unreadable_checkpoint(path: Path, exc: Exception) -> str:
    """One line for a checkpoint torch or safetensors could not read (their own advice is many lines)."""
    import re

    text = str(exc)
    unpickler = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if glob:
        return (
            f"checkpoint {path} holds pickled Python objects besides tensors ({glob.group(1)}), which sam3-trt does "
            "not load (torch.load with weights_only=True, for safety); load it yourself and save its state dict "
            "with torch.save({'model': model.state_dict()}, 'sam3-tensors.pt'), or use the official sam3.pt"
        )
    reason = unpickler.group(1).strip() if unpickler else (text.strip().splitlines() or [""])[0][:120]
    return (
        f"could not read checkpoint {path} ({type(exc).__name__}{': ' + reason if reason else ''}): the file is "
        "corrupt, truncated or not a torch/safetensors checkpoint; download sam3.pt again"
    )


def read_checkpoint(path: str | os.PathLike[str], prefix: str = "detector.") -> dict[str, Any]:
    """Read a ``sam3.pt``-layout checkpoint and return one model's state dict, its prefix stripped.

    Args:
        path: Checkpoint file.
        prefix: ``"detector."`` (the image model) or ``"tracker."`` (the video tracker).

    Raises:
        Sam3TrtError: missing, unreadable or corrupt file, or no image-model keys.
    """
    p = Path(path)
    if not p.is_file():
        raise Sam3TrtError(
            f"checkpoint not found: {p}. Pass the path of sam3.pt (or .safetensors), or use --random-weights"
        )
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(p), device="cpu")
        else:
            import torch

            raw = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
        raise Sam3TrtError(_unreadable_checkpoint(p, exc)) from None
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
        raw = raw["model"]
    if not isinstance(raw, Mapping):
        raise Sam3TrtError(f"checkpoint {p} holds a {type(raw).__name__}, not a state dict; expected sam3.pt's layout")
    if not raw:
        raise Sam3TrtError(f"checkpoint {p} holds no tensors (an empty state dict); expected sam3.pt's layout")
    state = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
    if not state:
        sample = ", ".join(list(raw)[:3])
        what = "image-model" if prefix == "detector." else prefix.rstrip(".")
        raise Sam3TrtError(
            f"checkpoint {p} has no {what} weights (no '{prefix}*' keys; first keys: {sample}); "
            "expected the official sam3.pt layout"
        )
    return state


def load_checkpoint_into(
    model: Any, path: str | os.PathLike[str], allow_missing: bool = False, prefix: str = "detector."
) -> WeightsOrigin:
    """Load a checkpoint into ``model`` strictly, reporting missing and unexpected keys.

    Args:
        model: Model from :func:`build_model` (its random weights fill allowed missing keys), or the
            tracker from :func:`~.tracker.build_tracker` with ``prefix="tracker."``.
        path: Checkpoint file.
        allow_missing: Keep the model's own values for missing keys instead of failing.
        prefix: Key prefix of ``model``'s weights in the checkpoint.
    """
    state = read_checkpoint(path, prefix)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise Sam3TrtError(
            f"checkpoint {path} is missing {len(missing)} of the model's {len(own)} keys ({shown}); "
            f"it is not a sam3 {'image' if prefix == 'detector.' else prefix.rstrip('.')} checkpoint for this "
            "variant (pass --allow-missing to keep random values for them)"
        )
    bad_shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if bad_shapes:
        raise Sam3TrtError(
            f"checkpoint {path} has {len(bad_shapes)} tensors of the wrong shape ({bad_shapes[0]}); "
            "check --variant (a full checkpoint needs --variant full)"
        )
    merged = {k: (state[k] if k in state else v) for k, v in own.items()}
    model.load_state_dict(merged, strict=True)
    return WeightsOrigin(
        kind="checkpoint",
        variant="",
        path=str(path),
        sha256=sha256_file(path),
        missing_keys=tuple(missing),
        unexpected_keys=tuple(unexpected),
    )


def download_from_hf() -> Path:
    """Download ``facebook/sam3``'s ``sam3.pt`` (gated: needs ``huggingface-cli login`` and network)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id="facebook/sam3", filename="sam3.pt"))
    except Exception as exc:  # noqa: BLE001 - offline, gated, auth: all end the same way
        raise Sam3TrtError(
            f"could not download facebook/sam3 from the Hugging Face hub ({type(exc).__name__}); "
            "it needs network access and an accepted licence (huggingface-cli login). "
            "Download sam3.pt elsewhere and pass --checkpoint PATH"
        ) from None


def load_model(
    variant: str = "full",
    checkpoint: str | os.PathLike[str] | None = None,
    from_hf: bool = False,
    random_weights: bool = False,
    seed: int = 0,
    allow_missing: bool = False,
    device: str = "cpu",
    video: bool = False,
) -> tuple[Any, WeightsOrigin]:
    """Build the model and fill its weights from exactly one source.

    Args:
        variant: ``"full"`` or ``"tiny"``.
        checkpoint: Path of a ``sam3.pt``-layout checkpoint.
        from_hf: Download the official checkpoint from the Hugging Face hub.
        random_weights: Use deterministic random weights.
        seed: Seed for random weights.
        allow_missing: Accept a checkpoint with missing keys.
        device: Torch device.
        video: With the tracker's neck levels (``sam2_convs``; see :func:`build_model`).

    Returns:
        ``(model, origin)``.
    """
    chosen = [bool(checkpoint), from_hf, random_weights]
    if sum(chosen) != 1:
        raise Sam3TrtError("choose exactly one weights source: --checkpoint PATH, --from-hf or --random-weights")
    if checkpoint is not None:
        read_checkpoint(checkpoint)  # fail on a bad file before spending minutes building the model
    model = build_model(variant, seed=seed, device=device, video=video)
    if random_weights:
        return model, WeightsOrigin(kind="random", variant=variant, seed=seed)
    path = Path(checkpoint) if checkpoint is not None else download_from_hf()
    origin = load_checkpoint_into(model, path, allow_missing=allow_missing)
    kind = "checkpoint" if checkpoint is not None else "huggingface"
    return model, dataclasses.replace(origin, kind=kind, variant=variant)


def save_checkpoint(model: Any, path: str | os.PathLike[str], tracker_keys: int = 2, tracker: Any = None) -> None:
    """Save ``model`` in the official ``sam3.pt`` layout (used by tests and for round trips).

    Args:
        model: Image model.
        path: ``.pt`` or ``.safetensors`` destination.
        tracker_keys: Number of dummy ``tracker.*`` entries to include when ``tracker`` is not given
            (upstream files carry the video tracker).
        tracker: The video tracker, saved under ``tracker.*`` as upstream's file holds it.
    """
    import torch

    state = {f"detector.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if tracker is not None:
        state.update({f"tracker.{k}": v.detach().cpu().contiguous() for k, v in tracker.state_dict().items()})
    else:
        for i in range(tracker_keys):
            state[f"tracker.dummy_{i}.weight"] = torch.zeros(2)
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"model": state}, str(path))


def check_checkpoint_origin(
    weights: Mapping[str, Any], checkpoint: str | os.PathLike[str], what: str, where: str, random_fix: str
) -> None:
    """Refuse a checkpoint that is not the one some artifacts were made from, in one line.

    Args:
        weights: The artifacts' ``weights`` record (:class:`WeightsOrigin` as a dict).
        checkpoint: The checkpoint the caller was given.
        what: How the caller names it (``--checkpoint``, ``build_sam3_image_model: checkpoint_path``).
        where: How to name the artifacts (their folder).
        random_fix: What to do when the artifacts were made from random weights.

    Raises:
        Sam3TrtError: the artifacts hold random weights, or the file's sha256 is not the recorded one.
    """
    origin = WeightsOrigin.from_dict({"kind": "unknown", "variant": "?", **weights})
    if origin.kind == "random":
        raise Sam3TrtError(f"{what} {checkpoint}: {where} came from random weights (seed {origin.seed}); {random_fix}")
    if origin.sha256 and Path(checkpoint).is_file() and sha256_file(checkpoint) != origin.sha256:
        raise Sam3TrtError(
            f"{what} {checkpoint} is not the checkpoint {where} came from ({origin.path}, sha256 "
            f"{origin.sha256[:12]}); pass that checkpoint, or export this one and use its folder"
        )


def model_from_manifest(
    manifest: Mapping[str, Any], checkpoint: str | os.PathLike[str] | None = None, video: bool = False
) -> tuple[Any, WeightsOrigin]:
    """Rebuild the eager model an export was made from (the parity reference).

    Args:
        manifest: Export (or engine) manifest with a ``weights`` entry.
        checkpoint: Checkpoint path, overriding the one recorded (its sha256 must match the record).
        video: With the tracker's neck levels (an export made with ``--video``).
    """
    weights = manifest.get("weights", {})
    variant = weights.get("variant") or "full"
    if checkpoint is not None:
        fix = (
            "the reference is rebuilt from that seed: drop --checkpoint, or export from the checkpoint first "
            f"(sam3-trt export --checkpoint {checkpoint} --out DIR)"
        )
        check_checkpoint_origin(weights, checkpoint, "--checkpoint", "these artifacts", fix)
    if weights.get("kind") == "random":
        return load_model(variant=variant, random_weights=True, seed=int(weights.get("seed", 0)), video=video)
    path = checkpoint or weights.get("path")
    if not path:
        raise Sam3TrtError("the artifacts were made from a checkpoint; pass --checkpoint PATH to build the reference")
    if checkpoint is None:  # the recorded path: it may have been replaced since
        check_checkpoint_origin(weights, path, "the recorded checkpoint", "these artifacts", "")
    return load_model(variant=variant, checkpoint=path, allow_missing=bool(weights.get("missing_keys")), video=video)
