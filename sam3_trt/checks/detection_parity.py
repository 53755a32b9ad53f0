"""End-to-end parity: a sam3-trt processor against upstream eager ``Sam3Processor`` (the comparison core).

Used by ``sam3-trt parity``, by the tests and by CI. Both processors see the same weights, image and
prompts. Each case runs both at threshold 0 (all 200 queries, in query order) and at a threshold that
keeps detections; queries are matched by index (the same decoder query on both sides). Checks, with
tolerances from :data:`sam3_trt.tolerances.DETECTION_TOLERANCES`:

* the same kept set, ignoring queries whose reference score is within ``threshold_band`` of the threshold;
* per kept query: ``masks_logits`` max abs, mask IoU, box error in pixels, score error;
* the candidate's own thresholded result equals its threshold-0 result filtered by ``score > threshold``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import OutputCheck, check_outputs
from ..errors import Sam3TrtError
from ..runtime.arrays import to_numpy
from ..tolerances import DETECTION_TOLERANCES, tolerance

#: Threshold that keeps every query: scores are products of sigmoids, which can underflow to 0.0 in float32.
#: Outside the [0, 1] that ``set_confidence_threshold`` accepts, so parity sets it on the attribute both
#: processors read (queries are compared by index: both sides must keep all of them).
KEEP_ALL = -1.0

#: (label, text prompt or None, boxes [(cxcywh, label)])
DEFAULT_CASES: tuple[tuple[str, str | None, tuple[tuple[tuple[float, ...], bool], ...]], ...] = (
    ("text", "a red square", ()),
    ("text+negative_box", "a red square", (((0.68, 0.55, 0.3, 0.4), False),)),
    ("full_image_box_only", None, (((0.5, 0.5, 1.0, 1.0), True),)),
)


@dataclasses.dataclass
class DetectionCase:
    """Detection parity of one image/prompt case at one threshold."""

    case: str
    threshold: float
    reference_kept: int
    candidate_kept: int
    only_reference: list[int]
    only_candidate: list[int]
    masks_logits_max_abs: float
    mask_iou_min: float
    box_px_max: float
    score_max_abs: float
    self_consistent: bool
    tolerances: dict[str, float]

    @property
    def failures(self) -> list[str]:
        tol = self.tolerances
        out = []
        if self.only_reference or self.only_candidate:
            out.append(
                f"kept sets differ: only reference {self.only_reference[:10]}, only candidate {self.only_candidate[:10]}"
            )
        if self.masks_logits_max_abs > tol["masks_logits_max_abs"]:
            out.append(f"masks_logits max_abs {self.masks_logits_max_abs:.3g} > {tol['masks_logits_max_abs']}")
        if self.mask_iou_min < tol["mask_iou_min"]:
            out.append(f"mask IoU {self.mask_iou_min:.4f} < {tol['mask_iou_min']}")
        if self.box_px_max > tol["box_px_max"]:
            out.append(f"boxes differ by {self.box_px_max:.3g} px > {tol['box_px_max']}")
        if self.score_max_abs > tol["score_max_abs"]:
            out.append(f"scores differ by {self.score_max_abs:.3g} > {tol['score_max_abs']}")
        if not self.self_consistent:
            out.append("candidate's thresholded result differs from its threshold-0 result filtered by score")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        verdict = "ok  " if self.passed else "FAIL"
        return (
            f"{verdict} {self.case:<22} t={self.threshold:.4f} kept {self.reference_kept}/{self.candidate_kept} "
            f"masks_logits={self.masks_logits_max_abs:.2g} IoU>={self.mask_iou_min:.4f} box<={self.box_px_max:.2g}px "
            f"score<={self.score_max_abs:.2g}" + ("" if self.passed else "  <- " + "; ".join(self.failures))
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed, "failures": self.failures}


@dataclasses.dataclass
class StageCase:
    """One graph (stage) of the candidate's backend against the eager wrappers, on the same inputs."""

    stage: str
    checks: list[OutputCheck]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def describe(self) -> str:
        return f"stage {self.stage}:\n" + "\n".join("  " + c.describe() for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "passed": self.passed, "outputs": [c.to_dict() for c in self.checks]}


@dataclasses.dataclass
class FigureData:
    """What the parity figure shows: one case, its kept masks on both sides and their probabilities.

    Args:
        image: The input image.
        case: Case label (``image0:text``).
        prompt: The text prompt (``None`` for boxes only).
        reference_masks: Boolean ``HxW`` masks the reference keeps.
        candidate_masks: Boolean ``HxW`` masks the candidate keeps.
        difference: ``HxW`` largest ``|p_ref - p_cand|`` over the queries both keep (mask probabilities).
    """

    image: Any
    case: str
    prompt: str | None
    reference_masks: list[np.ndarray]
    candidate_masks: list[np.ndarray]
    difference: np.ndarray


@dataclasses.dataclass
class DetectionReport:
    """All detection cases (end to end) and per-stage checks of one parity run."""

    backend: str
    precision: str
    weights: str
    cases: list[DetectionCase] = dataclasses.field(default_factory=list)
    stages: list[StageCase] = dataclasses.field(default_factory=list)
    #: the first case at its keeping threshold, for the figure
    figure_data: FigureData | None = None
    #: per-stage tensors (``inputs``, ``reference``, ``candidate``) when stages ran, for Polygraphy
    stage_tensors: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases) and all(s.passed for s in self.stages)

    def failures(self) -> list[str]:
        """Failing stage outputs (``stage.output``) and failing end-to-end cases."""
        out = [f"{s.stage}.{c.name}" for s in self.stages for c in s.checks if not c.passed]
        return out + [f"{c.case}@{c.threshold:.3g}" for c in self.cases if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "weights": self.weights,
            "passed": self.passed,
            "failures": self.failures(),
            "stages": [s.to_dict() for s in self.stages],
            "cases": [c.to_dict() for c in self.cases],
        }


#: Prompts and box of the per-stage decoder check (one positive box per prompt).
STAGE_PROMPTS = ("a red square", "blue disc")
STAGE_BOX = (0.68, 0.55, 0.3, 0.4)


def run_stage_parity(
    model: Any,
    candidate: Any,
    image: Any,
    precision: str = "fp32",
    table: Mapping[str, Any] | None = None,
    record: dict[str, dict[str, dict[str, np.ndarray]]] | None = None,
) -> list[StageCase]:
    """Each graph of ``candidate.backend`` against the eager wrappers (same inputs, tolerances as data).

    The decoder runs on the reference encoders' outputs, so each stage's error is its own.

    Args:
        model: Eager sam3 model with the candidate's weights.
        candidate: A :class:`sam3_trt.Sam3Processor`.
        image: Image for the vision stage.
        precision: Tolerance column of :data:`sam3_trt.tolerances.TOLERANCES`.
        table: Tolerance table override (tests prove the check can fail).
        record: When given, filled with ``{"reference"|"candidate": {output: array}}`` over all stages and
            ``{"inputs": {stage: {input: array}}}`` (for :func:`save_run_results`).
    """
    from ..runtime.backends import TorchBackend
    from ..runtime.image import preprocess
    from ..specs import SPECS

    reference = TorchBackend(model)
    p = len(STAGE_PROMPTS)
    feeds: dict[str, Any] = {
        "pixel_values": preprocess(image, use_torch=False),
        "input_ids": candidate.tokenizer(list(STAGE_PROMPTS)),
        "boxes": np.tile(np.asarray(STAGE_BOX, np.float32), (p, 1, 1)),
        "box_labels": np.ones((p, 1), bool),
        "box_mask": np.zeros((p, 1), bool),
    }
    cases = []
    for stage in ("vision_encoder", "text_encoder", "decoder"):
        inputs = {n: feeds[n] for n in SPECS[stage].input_names}
        ref = {k: to_numpy(v) for k, v in reference.run(stage, inputs).items()}
        out = {k: to_numpy(v) for k, v in candidate.backend.run(stage, inputs).items()}
        tols = {name: tolerance(stage, name, precision, table) for name in ref} | {
            "": tolerance(stage, "", precision, table)
        }
        cases.append(StageCase(stage, check_outputs(ref, out, tols)))
        if record is not None:
            record.setdefault("inputs", {})[stage] = {k: to_numpy(v) for k, v in inputs.items()}
            for side, values in (("reference", ref), ("candidate", out)):
                record.setdefault(side, {}).update(values)
        if stage != "decoder":
            feeds |= ref  # the decoder sees the reference encoders' outputs
    reference.close()
    return cases


def save_run_results(report: DetectionReport, path: str | Path) -> list[Path]:
    """Write the per-stage outputs of both sides as Polygraphy ``RunResults`` JSON (one runner each), and
    each graph's inputs beside it (``<path stem>.<graph>.inputs.json``, Polygraphy's ``--load-inputs`` format).

    ``polygraphy run decoder.onnx --trt --load-inputs P.decoder.inputs.json --load-outputs P.json`` then
    compares a TensorRT build with ours and with eager on the same inputs.

    Args:
        report: A report made with ``stages=True``.
        path: The RunResults JSON to write.

    Returns:
        The files written.

    Raises:
        Sam3TrtError: polygraphy is not installed, or the report has no stage tensors.
    """
    try:
        from polygraphy.comparator import IterationResult, RunResults
        from polygraphy.json import save_json
    except ImportError:
        raise Sam3TrtError("--save-outputs needs polygraphy: pip install polygraphy") from None
    if not report.stage_tensors:
        raise Sam3TrtError("--save-outputs needs the per-stage checks (drop --no-stages)")
    path = Path(path)
    results = RunResults()
    for side, name in (("reference", "eager-sam3"), ("candidate", f"sam3-trt-{report.backend}")):
        results.append((name, [IterationResult(dict(report.stage_tensors[side]), runner_name=name)]))
    results.save(str(path))
    written = [path]
    for graph, feeds in report.stage_tensors["inputs"].items():
        inputs_path = path.with_name(f"{path.stem}.{graph}.inputs.json")
        save_json([dict(feeds)], str(inputs_path), description=f"sam3-trt parity inputs of {graph}")
        written.append(inputs_path)
    return written


def set_images(reference: Any, candidate: Any, image: Any) -> dict[str, dict]:
    """Encode ``image`` on both processors (candidate first: its peak memory is freed before eager runs)."""
    return {"candidate": candidate.set_image(image), "reference": reference.set_image(image)}


def run_case(
    reference: Any,
    candidate: Any,
    image: Any,
    prompt: str | None,
    boxes: Sequence[tuple[Sequence[float], bool]],
    states: dict[str, dict] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Run one prompt case on both processors keeping all queries; returns their results as numpy.

    Args:
        reference: Upstream processor.
        candidate: sam3-trt processor.
        image: Image (encoded here unless ``states`` holds both encoded states).
        prompt: Text prompt, or ``None`` for boxes only.
        boxes: ``[(cxcywh, label)]`` added after the text.
        states: ``{"reference": state, "candidate": state}`` from :func:`set_images`; prompts are reset.
    """
    states = states or set_images(reference, candidate, image)
    out = {}
    for name, proc in (("reference", reference), ("candidate", candidate)):
        proc.confidence_threshold = KEEP_ALL
        state = states[name]
        proc.reset_all_prompts(state)
        if prompt is not None:
            state = proc.set_text_prompt(prompt, state)
        for box, label in boxes:
            state = proc.add_geometric_prompt(list(box), label, state)
        out[name] = {k: to_numpy(state[k]) for k in ("masks_logits", "masks", "boxes", "scores")}
        out[name]["_state"] = state
    return out


def compare_detections(
    label: str,
    results: dict[str, dict[str, Any]],
    threshold: float,
    candidate: Any,
    precision: str = "fp32",
    tolerances: dict[str, float] | None = None,
) -> DetectionCase:
    """Compare keep-all results of both sides at ``threshold`` (see module docstring)."""
    tol = dict(tolerances or DETECTION_TOLERANCES[precision])
    ref, cand = results["reference"], results["candidate"]
    ref_keep = ref["scores"] > threshold
    cand_keep = cand["scores"] > threshold
    near = np.abs(ref["scores"] - threshold) <= tol["threshold_band"]
    only_ref = [int(i) for i in np.flatnonzero(ref_keep & ~cand_keep & ~near)]
    only_cand = [int(i) for i in np.flatnonzero(cand_keep & ~ref_keep & ~near)]
    both = np.flatnonzero(ref_keep & cand_keep)
    if len(both):
        rm, cm = ref["masks"][both, 0], cand["masks"][both, 0]
        inter = (rm & cm).reshape(len(both), -1).sum(1)
        union = (rm | cm).reshape(len(both), -1).sum(1)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        masks_err = float(np.abs(ref["masks_logits"][both] - cand["masks_logits"][both]).max())
        box_err = float(np.abs(ref["boxes"][both] - cand["boxes"][both]).max())
        score_err = float(np.abs(ref["scores"][both] - cand["scores"][both]).max())
        iou_min = float(iou.min())
    else:
        masks_err = box_err = score_err = 0.0
        iou_min = 1.0
    # the candidate thresholds its own results consistently with its threshold-0 scores
    state = cand["_state"]
    candidate.set_confidence_threshold(threshold, state)
    filtered = to_numpy(state["scores"])
    consistent = np.array_equal(filtered, cand["scores"][cand_keep])
    candidate.confidence_threshold = KEEP_ALL
    return DetectionCase(
        case=label,
        threshold=float(threshold),
        reference_kept=int(ref_keep.sum()),
        candidate_kept=int(cand_keep.sum()),
        only_reference=only_ref,
        only_candidate=only_cand,
        masks_logits_max_abs=masks_err,
        mask_iou_min=iou_min,
        box_px_max=box_err,
        score_max_abs=score_err,
        self_consistent=bool(consistent),
        tolerances=tol,
    )


def figure_data(image: Any, case: str, prompt: str | None, results: dict, threshold: float) -> FigureData:
    """The parity figure's content for one case's keep-all results at ``threshold``."""
    ref, cand = results["reference"], results["candidate"]
    ref_keep, cand_keep = ref["scores"] > threshold, cand["scores"] > threshold
    both = np.flatnonzero(ref_keep & cand_keep)
    height, width = ref["masks_logits"].shape[-2:]
    diff = (
        np.abs(ref["masks_logits"][both, 0] - cand["masks_logits"][both, 0]).max(0)
        if len(both)
        else np.zeros((height, width), np.float32)
    )
    return FigureData(image, case, prompt, list(ref["masks"][ref_keep, 0]), list(cand["masks"][cand_keep, 0]), diff)


def keeping_threshold(scores: np.ndarray, keep: int = 12) -> float:
    """A threshold halfway between the ``keep``-th and next reference score (random weights keep none at 0.5)."""
    ordered = np.sort(scores)[::-1]
    keep = min(keep, len(ordered) - 1)
    return float((ordered[keep - 1] + ordered[keep]) / 2)


@contextlib.contextmanager
def upstream_processor(model: Any) -> Iterator[Any]:
    """Upstream ``Sam3Processor`` on CPU (its CUDA quirks patched), as the reference."""
    from sam3.model.sam3_image_processor import Sam3Processor as Upstream

    from ..export.patches import cpu_compat

    with cpu_compat():
        yield Upstream(model, device="cpu", confidence_threshold=0.0)


def run_detection_parity(
    model: Any,
    candidate: Any,
    images: Sequence[Any],
    weights: str,
    backend: str,
    cases: Sequence[tuple[str, str | None, Sequence[tuple[Sequence[float], bool]]]] = DEFAULT_CASES,
    precision: str = "fp32",
    progress: Callable[[str], None] | None = None,
    stages: bool = False,
) -> DetectionReport:
    """Run every case on every image, at threshold 0 and at a threshold that keeps detections.

    Args:
        model: Eager sam3 model with the candidate's weights.
        candidate: A :class:`sam3_trt.Sam3Processor`.
        images: Images to run.
        weights: Description of the weights' origin (goes into the report).
        backend: Candidate backend name.
        cases: ``(label, prompt or None, boxes)``.
        precision: Tolerance column.
        progress: Called with one line per step.
        stages: Also check each graph against the eager wrappers on the first image (:func:`run_stage_parity`).
    """
    say = progress or (lambda _m: None)
    report = DetectionReport(backend=backend, precision=precision, weights=weights)
    if stages and images:
        say("parity: per stage (vision, text, decoder) against eager")
        report.stages = run_stage_parity(model, candidate, images[0], precision, record=report.stage_tensors)
    with upstream_processor(model) as reference:
        for i, image in enumerate(images):
            say(f"parity: image{i}: set_image on both")
            states = set_images(reference, candidate, image)
            for label, prompt, boxes in cases:
                name = f"image{i}:{label}"
                say(f"parity: {name}")
                results = run_case(reference, candidate, image, prompt, boxes, states)
                keep = keeping_threshold(results["reference"]["scores"])
                for threshold in (0.0, keep):
                    report.cases.append(compare_detections(name, results, threshold, candidate, precision))
                if report.figure_data is None:
                    report.figure_data = figure_data(image, name, prompt, results, keep)
    return report


def parity_against_eager(
    artifacts: Path,
    backend: str = "auto",
    checkpoint: Path | None = None,
    images: Sequence[Path] = (),
    prompts: Sequence[str] = (),
    json_path: Path | None = None,
    figure: Path | None = None,
    stages: bool = True,
    save_outputs: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[DetectionReport, str, Any]:
    """``sam3-trt parity``: outputs checked first, then a folder's backend against upstream eager sam3, the report
    (JSON, Polygraphy RunResults, figure) written.

    Args:
        artifacts: Export folder or engine folder.
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``.
        checkpoint: Checkpoint of the reference (default: the one the manifest records).
        images: Image files (default: a bundled drawn image).
        prompts: Text prompts (default: text, text + negative box and box-only cases).
        json_path: Report JSON to write.
        figure: PNG: reference masks, candidate masks, difference map.
        stages: Also check each graph (vision, text, decoder).
        save_outputs: Per-stage outputs of both sides as Polygraphy RunResults JSON.
        progress: Called with one line per step.

    Returns:
        ``(report, precision, weights origin)``; the caller says whether it passed (``report.passed``).
    """
    import json

    from ..assets.images import demo_image
    from ..export.model import model_from_manifest
    from ..paths import check_output_file
    from ..runtime.artifacts import artifact_precision, resolve_artifacts
    from ..runtime.image import open_image
    from ..runtime.processor import Sam3Processor

    say = progress or (lambda _m: None)
    check_output_file(json_path, "--json", (".json",))
    check_output_file(figure, "--figure", (".png",))
    check_output_file(save_outputs, "--save-outputs", (".json",))
    if save_outputs is not None:
        if not stages:
            raise Sam3TrtError("--save-outputs writes the per-stage outputs: drop --no-stages")
        try:
            import polygraphy  # noqa: F401 - checked before the long run
        except ImportError:
            raise Sam3TrtError("--save-outputs needs polygraphy: pip install polygraphy") from None
    found = resolve_artifacts(artifacts)
    precision = artifact_precision(found.manifest)  # picks the tolerance column
    pictures = [open_image(p) for p in images] or [demo_image()]
    say(f"reference: upstream sam3 (torch) from {found.manifest.get('weights', {}).get('kind')} weights")
    model, origin = model_from_manifest(found.manifest, checkpoint)
    with Sam3Processor(found.folder, backend=backend) as candidate:
        report = run_detection_parity(
            model,
            candidate,
            pictures,
            weights=origin.describe(),
            backend=candidate.backend.name,
            progress=say,
            precision=precision,
            cases=[(f"text:{p}", p, ()) for p in prompts] or DEFAULT_CASES,
            stages=stages,
        )
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    if save_outputs is not None:
        save_run_results(report, save_outputs)
    if figure is not None and report.figure_data is not None:
        from .figures import parity_panels

        random = found.manifest.get("weights", {}).get("kind") == "random"
        parity_panels(report.figure_data, figure, ("upstream eager", f"sam3-trt {report.backend}"), random)
    return report, precision, origin
