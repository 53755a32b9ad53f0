"""``sam3_trt.build_sam3_image_model``: upstream's builder call shape, returning a graph-backed model.

Clients build upstream's model, wrap it in a processor and click on the *model*::

    # from sam3.model_builder import build_sam3_image_model
    # from sam3.model.sam3_image_processor import Sam3Processor
    from sam3_trt import Sam3Processor, build_sam3_image_model

    model = build_sam3_image_model(enable_inst_interactivity=True, artifacts="artifacts/full")
    processor = Sam3Processor(model, confidence_threshold=0.05)     # cheap: the engines live in the model
    state = processor.set_image(image)
    masks, scores, logits = model.predict_inst(state, point_coords=[[500, 375]], point_labels=[1])

The folder (an export, or engines) is named by ``artifacts=`` or, for code that cannot pass it (a library
calling upstream's builder with upstream's arguments), by the environment variable ``SAM3_TRT_ARTIFACTS``.
Upstream's arguments are checked against the folder, never ignored:

* ``checkpoint_path``: the file's sha256 must be the one the folder was exported from;
* ``load_from_HF=True`` without a checkpoint: the folder's own weights are used (logged once, with their origin);
* ``bpe_path``: must hold the folder's tokenizer vocabulary (same sha256);
* ``eval_mode=False`` and ``enable_segmentation=False`` are refused (graphs do not train; they always carry the
  segmentation head); ``compile`` is accepted (engines are compiled already);
* ``enable_inst_interactivity=True`` needs an export made with ``--video`` (the tracker neck and click head);
* any other keyword (X-AnyLabeling-Server passes ``image_size``) is refused in one line: upstream's builder
  takes none either, and the graphs' input size is fixed at 1008.

``model.load_state_dict(sd)`` does not load anything: it checks ``sd`` against the per-tensor digests the export
recorded (:mod:`sam3_trt.weights`) and refuses other weights in one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import Sam3TrtError
from .backends import Backend

log = logging.getLogger(__name__)

#: Names the export or engine folder when the builder's caller cannot pass ``artifacts=``.
ARTIFACTS_ENV = "SAM3_TRT_ARTIFACTS"
#: Upstream's ``build_sam3_image_model`` arguments (sam3 0.1.x), in its order.
UPSTREAM_ARGUMENTS = (
    "bpe_path",
    "device",
    "eval_mode",
    "checkpoint_path",
    "load_from_HF",
    "enable_segmentation",
    "enable_inst_interactivity",
    "compile",
)


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns (as torch's): keys the record has that were not given, and the reverse."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def build_sam3_image_model(
    bpe_path: str | os.PathLike[str] | None = None,
    device: str | None = None,
    eval_mode: bool = True,
    checkpoint_path: str | os.PathLike[str] | None = None,
    load_from_HF: bool = True,
    enable_segmentation: bool = True,
    enable_inst_interactivity: bool = False,
    compile: bool = False,
    *,
    artifacts: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    **unknown: Any,
) -> Sam3ImageModel:
    """Upstream's ``sam3.model_builder.build_sam3_image_model``, over an export or engine folder.

    Args:
        bpe_path: Tokenizer vocabulary; when given it must be the folder's (same sha256).
        device: Torch device results are returned on (default: the backend's: the GPU for engines).
        eval_mode: Must be ``True`` (graphs run inference only).
        checkpoint_path: When given, the checkpoint the folder must have been exported from (checked by sha256).
        load_from_HF: Upstream downloads the official weights; here the folder's weights are used (logged).
        enable_segmentation: Must be ``True`` (the graphs carry the segmentation head).
        enable_inst_interactivity: Clicks (``predict_inst``): needs an export made with ``--video``.
        compile: Accepted; engines are compiled already.
        artifacts: Export or engine folder (default: ``$SAM3_TRT_ARTIFACTS``).
        backend: ``auto`` (the folder decides), ``onnxruntime`` or ``tensorrt``.
        unknown: Refused in one line (upstream's builder takes no other keyword).

    Raises:
        Sam3TrtError: any argument the folder cannot honour, before any graph or engine is loaded.
    """
    if unknown:
        name, value = next(iter(unknown.items()))
        raise Sam3TrtError(
            f"build_sam3_image_model: unknown argument {name}={value!r}; upstream's builder takes "
            f"{', '.join(UPSTREAM_ARGUMENTS)} (the graphs' input size is fixed at 1008; the folder is "
            f"artifacts= or ${ARTIFACTS_ENV})"
        )
    folder = artifacts if artifacts is not None else os.environ.get(ARTIFACTS_ENV)
    if not folder:
        raise Sam3TrtError(
            f"build_sam3_image_model: no export or engine folder; pass artifacts='DIR' or set {ARTIFACTS_ENV}=DIR "
            "(make one with `sam3-trt export --video --out DIR`)"
        )
    if not eval_mode:
        raise Sam3TrtError("build_sam3_image_model: eval_mode=False: the graphs run inference only; pass True")
    if not enable_segmentation:
        raise Sam3TrtError(
            "build_sam3_image_model: enable_segmentation=False: the graphs always carry the segmentation head; "
            "pass True (and ignore the masks you do not need)"
        )
    from .artifacts import resolve_artifacts

    found = resolve_artifacts(folder)
    _check_weights_source(found, checkpoint_path, load_from_HF)
    if bpe_path is not None:
        _check_vocabulary(found, Path(bpe_path))
    from .processor import make_backend

    engine, tokenizer_path = make_backend(found.folder, backend, None, 0, "auto", True)
    try:
        return Sam3ImageModel(engine, tokenizer_path, found.manifest, bool(enable_inst_interactivity), device)
    except BaseException:
        engine.close()
        raise


def _check_weights_source(found: Any, checkpoint_path: Any, load_from_hf: bool) -> None:
    from ..export.model import WeightsOrigin, check_checkpoint_origin

    origin = WeightsOrigin.from_dict(found.manifest.get("weights", {"kind": "unknown", "variant": "?"}))
    if checkpoint_path is None:
        if load_from_hf:
            log.info("build_sam3_image_model: weights from %s: %s", found.folder, origin.describe())
        return
    path = Path(checkpoint_path)
    if not path.is_file():
        raise Sam3TrtError(f"build_sam3_image_model: checkpoint_path {path} does not exist")
    fix = f"export the checkpoint (`sam3-trt export --checkpoint {path} --out DIR`) and name that folder"
    check_checkpoint_origin(found.manifest.get("weights", {}), path, "build_sam3_image_model: checkpoint_path",
                            str(found.folder), fix)  # fmt: skip


def _check_vocabulary(found: Any, path: Path) -> None:
    from ..export.model import sha256_file

    expected = found.manifest.get("tokenizer", {}).get("sha256")
    if not path.is_file():
        raise Sam3TrtError(f"build_sam3_image_model: bpe_path {path} does not exist")
    if expected and sha256_file(path) != expected:
        raise Sam3TrtError(
            f"build_sam3_image_model: bpe_path {path} is not the vocabulary {found.folder} was exported with "
            "(sha256 differs); drop bpe_path (the folder carries its own)"
        )


class Sam3ImageModel:
    """What :func:`build_sam3_image_model` returns: upstream's ``Sam3Image`` surface over graphs or engines.

    It owns the backend (ONNX Runtime sessions or TensorRT engines); any number of
    :class:`~sam3_trt.Sam3Processor` built on it share them, so a processor per request costs nothing.

    Args:
        backend: The backend running the folder's graphs (owned: :meth:`close` frees it).
        tokenizer_path: The folder's tokenizer vocabulary.
        manifest: The folder's manifest (weight digests, origin).
        interactive: Serve clicks (``predict_inst``).
        device: Torch device results are returned on (``None``: the backend's).
    """

    def __init__(
        self,
        backend: Backend,
        tokenizer_path: Path,
        manifest: Mapping[str, Any],
        interactive: bool,
        device: str | None = None,
    ) -> None:
        from .processor import Sam3Processor

        self.backend = backend
        self.tokenizer_path = Path(tokenizer_path)
        self.manifest = dict(manifest)
        self.device = device or backend.result_device
        self.folder = getattr(backend, "folder", None)
        self._interactive = bool(interactive)
        #: Upstream's attribute: the object that answers clicks (``None`` without interactivity), here a
        #: processor over the same backend.
        self.inst_interactive_predictor: Sam3Processor | None = None
        if interactive:
            self.inst_interactive_predictor = Sam3Processor(self)

    @property
    def interactive(self) -> bool:
        """Whether the model answers clicks (built with ``enable_inst_interactivity=True``)."""
        return self._interactive

    # -- torch.nn.Module's surface that clients call --------------------------------------------
    def to(self, device: Any) -> Sam3ImageModel:
        """Return results on ``device`` (a torch device or its name); the graphs stay where they run.

        Args:
            device: ``"cpu"``, ``"cuda"``, ``"cuda:0"`` or a ``torch.device``.
        """
        self.device = str(device)
        if self.inst_interactive_predictor is not None:
            self.inst_interactive_predictor.device = self.device
        return self

    def eval(self) -> Sam3ImageModel:
        """No-op (graphs run inference only); returns the model, as torch's."""
        return self

    def train(self, mode: bool = True) -> Sam3ImageModel:
        """``train(False)`` is :meth:`eval`; ``train(True)`` is refused in one line.

        Args:
            mode: Training mode.
        """
        if mode:
            raise Sam3TrtError("train(True): the model runs exported graphs, which do not train; use upstream's")
        return self

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Check that ``state_dict`` holds the weights the folder was exported from; nothing is loaded.

        Args:
            state_dict: The official checkpoint (``{"model": ...}`` or its inner dict: ``detector.*`` and
                ``tracker.*`` keys) or upstream's image model's ``state_dict()``.
            strict: Refuse missing or unexpected keys too (as torch's).

        Returns:
            ``(missing_keys, unexpected_keys)``, empty under ``strict``.

        Raises:
            Sam3TrtError: a tensor differs from the export's (always), or keys do not match (``strict``); the
                folder predates weight digests.
        """
        from ..weights import check_state_dict, split_state_dict

        if not isinstance(state_dict, Mapping):
            raise Sam3TrtError(f"load_state_dict takes a mapping of tensors, got {type(state_dict).__name__}")
        digests = self.manifest.get("weight_digests")
        where = str(self.folder or "the folder")
        if not digests:
            raise Sam3TrtError(
                f"load_state_dict: {where} records no weight digests (exported by an older sam3-trt); export it "
                "again to check weights against it"
            )
        image, tracker = split_state_dict(state_dict)
        known = tuple(self.manifest.get("weights", {}).get("unexpected_keys", ()))
        missing, unexpected = check_state_dict(image, digests["image"], "image model", where, strict, known)
        if tracker and "tracker" in digests:
            known = tuple(self.manifest.get("video", {}).get("weights", {}).get("unexpected_keys", ()))
            m, u = check_state_dict(tracker, digests["tracker"], "tracker", where, strict, known)
            missing, unexpected = missing + [f"tracker.{k}" for k in m], unexpected + [f"tracker.{k}" for k in u]
        elif tracker:
            unexpected += [f"tracker.{k}" for k in sorted(tracker)]
            if strict:
                raise Sam3TrtError(
                    f"load_state_dict: {len(tracker)} tracker keys given but {where} has no tracker graphs; export "
                    "with --video, or pass the image model's weights only"
                )
        return IncompatibleKeys(missing, unexpected)

    # -- clicks (upstream's place for them) -----------------------------------------------------
    def predict_inst(self, inference_state: dict, **kwargs: Any) -> tuple[Any, Any, Any]:
        """Upstream's ``Sam3Image.predict_inst``: see :meth:`sam3_trt.Sam3Processor.predict_inst`.

        Args:
            inference_state: A state from ``Sam3Processor(model).set_image``.
            kwargs: ``point_coords``, ``point_labels``, ``box``, ``mask_input``, ``multimask_output``,
                ``return_logits``, ``normalize_coords``.
        """
        return self._clicks("predict_inst").predict_inst(inference_state, **kwargs)

    def predict_inst_batch(self, inference_state: Any, *args: Any, **kwargs: Any) -> tuple[list, list, list]:
        """Upstream's ``Sam3Image.predict_inst_batch``: see :meth:`sam3_trt.Sam3Processor.predict_inst_batch`.

        Args:
            inference_state: The state ``set_image_batch`` returned.
            args: ``point_coords_batch``, ``point_labels_batch``, ``box_batch``, ``mask_input_batch``.
            kwargs: Those by name, and ``multimask_output``, ``return_logits``, ``normalize_coords``.
        """
        return self._clicks("predict_inst_batch").predict_inst_batch(inference_state, *args, **kwargs)

    def _clicks(self, call: str) -> Any:
        if self.inst_interactive_predictor is None:
            raise Sam3TrtError(
                f"{call}: the model was built without clicks; pass enable_inst_interactivity=True to "
                "build_sam3_image_model (with a folder exported with --video)"
            )
        return self.inst_interactive_predictor

    # -- resources ------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the backend's sessions, engines and device memory (processors built on it stop working)."""
        self.backend.close()

    def __enter__(self) -> Sam3ImageModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_batch_state(state: Mapping[str, Any]) -> list[dict]:
    """Per-image click states from upstream's single ``set_image_batch`` state (views, no copies).

    Args:
        state: A dict with ``original_heights``, ``original_widths`` and the batched ``backbone_out``.
    """
    heights: Sequence[int] = state["original_heights"]
    widths: Sequence[int] = state["original_widths"]
    levels = state["backbone_out"].get("sam2_backbone_out", {}).get("backbone_fpn")
    out = []
    for i, (h, w) in enumerate(zip(heights, widths, strict=True)):
        backbone: dict[str, Any] = {"backbone_fpn": [f[i : i + 1] for f in state["backbone_out"]["backbone_fpn"]]}
        backbone["vision_features"] = backbone["backbone_fpn"][-1]
        if levels is not None:
            backbone["sam2_backbone_out"] = {"backbone_fpn": [lv[i : i + 1] for lv in levels]}
        out.append({"original_height": h, "original_width": w, "backbone_out": backbone})
    return out
