"""Parity of exported graphs against PyTorch eager, run on every export.

Two levels:

* **Per graph**: each ONNX graph under ONNX Runtime CPU against its eager wrapper on the same inputs.
  The decoder reference runs upstream's own box encoding (``torchvision.ops.roi_align`` with adaptive
  sampling), so this also proves the plugin-free RoIAlign; cases cover P in {1, 3} prompts and
  N in {1 (padding only), 2, 5} boxes with mixed labels and boxes of every size, full image included.
* **Pipeline**: the three graphs chained against upstream's ``Sam3Processor`` on a real (drawn) image:
  text prompt; text plus a negative box; a box-only prompt with a full-image box. The graphs' raw
  outputs are compared with ``forward_grounding``'s, then fed through upstream's own
  ``Sam3Processor._forward_grounding`` post-processing (threshold 0: all 200 queries kept) and the
  final ``masks_logits``, ``boxes`` and ``scores`` compared.

Tolerances come from :mod:`sam3_trt.tolerances`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import OutputCheck, check_outputs
from ..ort import ort_session, run_graph
from ..specs import SPECS
from ..tolerances import tolerance
from .patches import cpu_compat, swap_attr

#: Box prompts used by decoder parity: normalised cx, cy, w, h. Sizes span a few feature pixels up to the
#: full image, so torchvision's adaptive sampling uses 1 to 11 samples per bin (72x72 map, 7x7 bins).
PARITY_BOXES = np.array(
    [
        [0.5, 0.5, 1.0, 1.0],  # full image: 11x11 samples per bin
        [0.30, 0.35, 0.25, 0.30],  # medium
        [0.71, 0.55, 0.38, 0.40],  # large
        [0.52, 0.48, 0.012, 0.015],  # below one feature pixel
        [0.95, 0.06, 0.10, 0.12],  # touching the border
    ],
    dtype=np.float32,
)

#: (label, P, N, real boxes per prompt) cases for decoder parity; the rest of each row is padding.
DECODER_CASES: tuple[tuple[str, int, int, tuple[int, ...]], ...] = (
    ("P1_N1_padded", 1, 1, (0,)),
    ("P1_N2", 1, 2, (2,)),
    ("P1_N5", 1, 5, (5,)),
    ("P3_N1_padded", 3, 1, (0, 0, 0)),
    ("P3_N2", 3, 2, (2, 1, 0)),
    ("P3_N5", 3, 5, (5, 3, 1)),
)

PARITY_PROMPTS = ("a red square", "blue disc", "green triangle")


@dataclasses.dataclass
class ParityCase:
    """One comparison: a graph (or the pipeline) on one input case.

    Args:
        graph: Graph name or ``"pipeline"``.
        case: Case label (sizes, prompt kind).
        checks: One :class:`~sam3_trt.compare.OutputCheck` per output.
        input_shapes: The shape of every input the case ran (what the report says was covered).
    """

    graph: str
    case: str
    checks: list[OutputCheck]
    input_shapes: dict[str, list[int]] | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "case": self.case,
            "passed": self.passed,
            "outputs": [c.to_dict() for c in self.checks],
            **({"input_shapes": self.input_shapes} if self.input_shapes is not None else {}),
        }


@dataclasses.dataclass
class ParityReport:
    """All parity cases of one export.

    Args:
        precision: Tolerance column used.
        cases: Every case run.
    """

    precision: str
    cases: list[ParityCase] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def failures(self) -> list[str]:
        """One line per failing output: graph, case, output and its error."""
        return [f"{case.graph}[{case.case}] {c.describe()}" for case in self.cases for c in case.checks if not c.passed]

    def lines(self) -> list[str]:
        """Human-readable table, one line per output."""
        return [f"{case.graph:<15} {case.case:<18} {c.describe()}" for case in self.cases for c in case.checks]

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "passed": self.passed, "cases": [c.to_dict() for c in self.cases]}


def _run_eager(module: Any, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    spec = SPECS[graph]
    with torch.inference_mode(), cpu_compat():
        outs = module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.input_names))
    return {n: o.numpy() for n, o in zip(spec.output_names, outs, strict=True)}


def _case(graph: str, label: str, ref: Mapping[str, Any], out: Mapping[str, Any], precision: str) -> ParityCase:
    tols = {name: tolerance(graph, name, precision) for name in ref}
    tols[""] = tolerance(graph, "", precision)
    return ParityCase(graph, label, check_outputs(ref, out, tols))


def compare_graph(
    module: Any, session: Any, graph: str, feeds: Mapping[str, np.ndarray], label: str, precision: str = "fp32"
) -> tuple[ParityCase, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run ``graph`` eagerly and in ONNX Runtime on ``feeds`` and compare every output.

    Args:
        module: Eager wrapper (:mod:`.wrappers`).
        session: ONNX Runtime session of the exported graph.
        graph: Graph name.
        feeds: Inputs by name.
        label: Case label for the report.
        precision: Tolerance column.

    Returns:
        ``(case, eager outputs, ONNX Runtime outputs)``.
    """
    ref, out = _run_eager(module, graph, feeds), run_graph(session, graph, feeds)
    return _case(graph, label, ref, out, precision), ref, out


def decoder_box_inputs(num_prompts: int, num_boxes: int, real: Sequence[int]) -> dict[str, np.ndarray]:
    """Right-padded box inputs for a decoder case: ``real[p]`` boxes for prompt ``p``, labels alternating.

    Args:
        num_prompts: P.
        num_boxes: N (>= 1).
        real: Real boxes per prompt (the rest is padding).
    """
    boxes = np.zeros((num_prompts, num_boxes, 4), dtype=np.float32)
    labels = np.zeros((num_prompts, num_boxes), dtype=bool)
    mask = np.ones((num_prompts, num_boxes), dtype=bool)
    for p, n in enumerate(real):
        for i in range(n):
            boxes[p, i] = PARITY_BOXES[(i + p) % len(PARITY_BOXES)]
            labels[p, i] = (i + p) % 3 != 2  # mixed positive and negative
            mask[p, i] = False
    return {"boxes": boxes, "box_labels": labels, "box_mask": mask}


@contextlib.contextmanager
def _forward_grounding_returning(model: Any, outputs: Mapping[str, Any]) -> Iterator[None]:
    """Make ``model.forward_grounding`` return ``outputs`` (to reuse upstream's post-processing)."""
    with swap_attr(model, "forward_grounding", lambda **kwargs: dict(outputs)):
        yield


def run_parity(
    model: Any,
    export_dir: str | Path,
    precision: str = "fp32",
    vision_batches: Sequence[int] = (1,),
    progress: Callable[[str], None] | None = None,
) -> ParityReport:
    """Run every parity case of an export folder against the eager ``model``.

    Args:
        model: The eager sam3 image model the graphs were exported from.
        export_dir: Folder with ``vision_encoder.onnx``, ``text_encoder.onnx``, ``decoder.onnx``.
        precision: Tolerance column.
        vision_batches: Image batch sizes to check the vision graph at (each costs one eager and one ORT
            pass of the ViT: ~100 s per image at full size on 2 cores).
        progress: Called with a short line before each step.
    """
    import torch
    from sam3.model.sam3_image_processor import Sam3Processor
    from torchvision.transforms import v2

    from ..assets.images import demo_image
    from .wrappers import Decoder, TextEncoder, VisionEncoder

    say = progress or (lambda _msg: None)
    export_dir = Path(export_dir)
    report = ParityReport(precision)
    vision, text, decoder = VisionEncoder(model).eval(), TextEncoder(model).eval(), Decoder(model).eval()

    processor = Sam3Processor(model, device="cpu", confidence_threshold=0.0)
    images = [demo_image(640, 480, variant=i) for i in range(max(vision_batches))]
    pixels = np.stack([processor.transform(v2.functional.to_image(im)).numpy() for im in images])

    # -- vision: upstream set_image is the eager reference (one eager ViT pass at full size) ------
    say("parity: vision_encoder B=1 vs upstream Sam3Processor.set_image")
    with torch.inference_mode(), cpu_compat():
        state = processor.set_image(images[0])
    fpn_eager = {f"fpn{i}": t.numpy() for i, t in enumerate(state["backbone_out"]["backbone_fpn"])}
    session = ort_session(export_dir / SPECS["vision_encoder"].onnx_file)
    fpn_ort = run_graph(session, "vision_encoder", {"pixel_values": pixels[:1]})
    report.cases.append(_case("vision_encoder", "B1", fpn_eager, fpn_ort, precision))
    for batch in (b for b in vision_batches if b != 1):
        say(f"parity: vision_encoder B={batch}")
        feeds = {"pixel_values": pixels[:batch]}
        report.cases.append(compare_graph(vision, session, "vision_encoder", feeds, f"B{batch}", precision)[0])
    del session  # the ViT's activation buffers are the largest allocation: free them before the next graphs
    gc.collect()
    sessions = {g: ort_session(export_dir / SPECS[g].onnx_file) for g in ("text_encoder", "decoder")}

    # -- text -----------------------------------------------------------------------------------
    tokenizer = model.backbone.language_backbone.tokenizer
    for count in (1, 3):
        say(f"parity: text_encoder P={count}")
        ids = tokenizer(list(PARITY_PROMPTS[:count]), context_length=32).numpy()
        case, _, _ = compare_graph(
            text, sessions["text_encoder"], "text_encoder", {"input_ids": ids}, f"P{count}", precision
        )
        report.cases.append(case)

    # -- decoder (eager features in, so only the decoder's own error is measured) ---------------
    ids3 = tokenizer(list(PARITY_PROMPTS), context_length=32).numpy()
    text3 = _run_eager(text, "text_encoder", {"input_ids": ids3})
    for label, num_prompts, num_boxes, real in DECODER_CASES:
        say(f"parity: decoder {label}")
        feeds = {
            **fpn_eager,
            "text_features": text3["text_features"][:num_prompts],
            "text_mask": text3["text_mask"][:num_prompts],
            **decoder_box_inputs(num_prompts, num_boxes, real),
        }
        report.cases.append(compare_graph(decoder, sessions["decoder"], "decoder", feeds, label, precision)[0])

    # -- pipeline: the three graphs chained vs upstream Sam3Processor ----------------------------
    pipeline_cases: list[tuple[str, str, list[tuple[list[float], bool]]]] = [
        ("text", PARITY_PROMPTS[0], []),
        ("text+negative_box", PARITY_PROMPTS[0], [([0.68, 0.55, 0.3, 0.4], False)]),
        ("full_image_box_only", "visual", [([0.5, 0.5, 1.0, 1.0], True)]),
    ]
    for label, prompt, boxes in pipeline_cases:
        say(f"parity: pipeline {label}")
        ref_raw, ref_final, cand_raw, cand_final = _pipeline_case(
            processor, model, state, prompt, boxes, fpn_ort, sessions
        )
        report.cases.append(_case("pipeline", f"{label}:raw", ref_raw, cand_raw, precision))
        report.cases.append(_case("pipeline", f"{label}:final", ref_final, cand_final, precision))
    return report


_RAW_KEYS = {
    "pred_logits": "pred_logits",
    "pred_boxes": "pred_boxes",
    "presence_logit_dec": "presence_logit",
    "pred_masks": "pred_masks",
}


def _pipeline_case(
    processor: Any,
    model: Any,
    image_state: Mapping[str, Any],
    prompt: str,
    boxes: Sequence[tuple[list[float], bool]],
    fpn_ort: Mapping[str, np.ndarray],
    sessions: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    import torch

    state: dict[str, Any] = {k: v for k, v in image_state.items()}
    state["backbone_out"] = dict(image_state["backbone_out"])
    with torch.inference_mode(), cpu_compat():
        # Upstream's own calls, in a user's order: a text prompt (or none, for box-only), then boxes.
        if prompt != "visual":
            processor.set_text_prompt(prompt, state)
        for box, label in boxes:
            processor.add_geometric_prompt(box, label, state)
        ref_raw_t = model.forward_grounding(
            backbone_out=state["backbone_out"],
            find_input=processor.find_stage,
            geometric_prompt=state["geometric_prompt"],
            find_target=None,
        )
        ref_final = {k: state[k].float().numpy() for k in ("masks_logits", "boxes", "scores")}

    ids = model.backbone.language_backbone.tokenizer([prompt], context_length=32).numpy()
    text_out = run_graph(sessions["text_encoder"], "text_encoder", {"input_ids": ids})
    geo = state["geometric_prompt"]
    n = int(geo.box_embeddings.shape[0])
    if n == 0:
        box_feeds = decoder_box_inputs(1, 1, (0,))
    else:
        box_feeds = {
            "boxes": geo.box_embeddings.transpose(0, 1).numpy().astype(np.float32),
            "box_labels": geo.box_labels.transpose(0, 1).numpy().astype(bool),
            "box_mask": geo.box_mask.numpy().astype(bool),
        }
    dec = run_graph(sessions["decoder"], "decoder", {**fpn_ort, **text_out, **box_feeds})

    ref_raw = {ours: ref_raw_t[theirs].numpy() for theirs, ours in _RAW_KEYS.items()}
    ref_raw["pred_logits"] = ref_raw["pred_logits"].squeeze(-1)
    cand_raw = {k: dec[k] for k in ref_raw}

    # Upstream's post-processing on the graphs' outputs: swap forward_grounding for the ORT results.
    upstream_shaped = {
        "pred_logits": torch.from_numpy(dec["pred_logits"])[..., None],
        "pred_boxes": torch.from_numpy(dec["pred_boxes"]),
        "presence_logit_dec": torch.from_numpy(dec["presence_logit"]),
        "pred_masks": torch.from_numpy(dec["pred_masks"]),
    }
    with torch.inference_mode(), _forward_grounding_returning(model, upstream_shaped):
        processor._forward_grounding(state)
    cand_final = {k: state[k].float().numpy() for k in ("masks_logits", "boxes", "scores")}
    return ref_raw, ref_final, cand_raw, cand_final
