"""FP16 error of a precision policy, estimated on a CPU.

ONNX Runtime's CPU provider computes many FP16 ops in FP32 behind inserted casts, so running the FP16
graph there proves it is valid but says little about FP16 numerics. This module measures the policy
directly instead: it copies the FP32 graph and, around every node the policy makes FP16, rounds each
float input and output through FP16 (``Cast`` to float16 and back; constants first clipped to
onnxconverter-common's ``max_finite_val`` as the conversion does). The rounded graph runs in FP32 in
ONNX Runtime and its outputs are compared with the FP32 graph's, per output, on real inputs (the demo
image, text prompts, and for the decoder the FP32 encoders' outputs plus box prompts).

What it models: FP16 storage of every FP16 tensor (rounding, overflow to inf past 65504, underflow).
What it does not: FP16 accumulation inside kernels (TensorRT accumulates FP16 GEMMs and convolutions in
FP32 on tensor cores, and softmax and normalisation kernels reduce in FP32) and kernel-specific
reassociation; real FP16 engines are checked on the GPU with ``sam3-trt parity`` (not run here).
Random weights lack the outliers of trained ones: the estimate proves the mechanism, not trained-weight
ranges (``calibration`` measures those on data).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import OutputCheck, check_outputs
from ..ort import ort_session, run_graph, session_for_model
from ..specs import SPECS
from ..tolerances import TOLERANCES
from .precision import NodeDecision

#: onnxconverter-common's default clip for constants converted to FP16.
CONST_CLIP = 10000.0
#: Prompts and boxes the estimate runs (fixed: reports are comparable run to run).
ESTIMATE_PROMPTS = ("a red square", "blue disc", "green triangle")
ESTIMATE_BOXES = ((0.35, 0.45, 0.3, 0.4), (0.7, 0.55, 0.25, 0.3))


@dataclasses.dataclass
class EstimateCase:
    """Per-output error of one graph (or the chained pipeline) under the policy.

    Args:
        graph: Graph name or ``"pipeline"``.
        checks: Per-output comparisons against FP32.
        nonfinite: Per output, how many values are inf or NaN in the FP16-rounded run.
    """

    graph: str
    checks: list[OutputCheck]
    nonfinite: dict[str, int]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and not any(self.nonfinite.values())

    def lines(self) -> list[str]:
        out = [f"{self.graph}:"]
        for c in self.checks:
            bad = self.nonfinite.get(c.name, 0)
            out.append("  " + c.describe() + (f"  non-finite={bad}" if bad else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "passed": self.passed,
            "outputs": [c.to_dict() for c in self.checks],
            "nonfinite": self.nonfinite,
        }


@dataclasses.dataclass
class EstimateReport:
    """The FP16 estimate of one policy over an export.

    Args:
        policy: Policy name.
        cases: One per graph plus ``pipeline``.
        inputs: What ran (image size, prompts, boxes).
    """

    policy: str
    cases: list[EstimateCase]
    inputs: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def failures(self) -> list[str]:
        return [
            f"{c.graph}.{o.name}" for c in self.cases for o in c.checks if not o.passed or c.nonfinite.get(o.name, 0)
        ]

    def lines(self) -> list[str]:
        head = f"FP16 estimate ({self.policy}): {'passed' if self.passed else 'FAILED: ' + ', '.join(self.failures())}"
        return [head] + [line for c in self.cases for line in c.lines()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "FP32 compute with FP16 round-trips at every tensor the policy makes FP16 (ONNX Runtime CPU)",
            "policy": self.policy,
            "passed": self.passed,
            "inputs": self.inputs,
            "tolerances": "sam3_trt.tolerances.TOLERANCES['fp16']",
            "cases": [c.to_dict() for c in self.cases],
        }


def emulation_model(model: Any, decisions: Sequence[NodeDecision], floats: set[str]) -> Any:
    """Copy of ``model`` with FP16 round-trips around every FP16 node's float inputs and outputs.

    Args:
        model: FP32 ``onnx.ModelProto`` (external data may stay on disk).
        decisions: From :func:`~sam3_trt.engines.precision.plan` for this model.
        floats: Names of FP32 tensors.
    """
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    fp16 = {d.node for d in decisions if d.precision == "fp16"}
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    clip_lo = helper.make_tensor("__fp16emu_clip_lo", TensorProto.FLOAT, [], [-CONST_CLIP])
    clip_hi = helper.make_tensor("__fp16emu_clip_hi", TensorProto.FLOAT, [], [CONST_CLIP])
    graph.initializer.extend([clip_lo, clip_hi])
    rounded: dict[str, str] = {}
    nodes: list[Any] = []

    def round_trip(src: str, dst: str, constant: bool) -> list[Any]:
        tag = dst.replace("/", "_")
        ops = []
        if constant:
            ops.append(helper.make_node("Clip", [src, clip_lo.name, clip_hi.name], [f"{tag}__clip"]))
            src = f"{tag}__clip"
        ops.append(helper.make_node("Cast", [src], [f"{tag}__h"], to=TensorProto.FLOAT16))
        ops.append(helper.make_node("Cast", [f"{tag}__h"], [dst], to=TensorProto.FLOAT))
        return ops

    for node in list(graph.node):
        if node.name not in fp16:
            nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if not name or name not in floats:
                continue
            if name not in rounded:
                rounded[name] = f"{name}__fp16emu"
                nodes.extend(round_trip(name, rounded[name], name in constants))
            node.input[i] = rounded[name]
        post = []
        for i, name in enumerate(node.output):
            if not name or name not in floats:
                continue
            raw = f"{name}__fp32emu"
            node.output[i] = raw
            post.extend(round_trip(raw, name, False))
            rounded[name] = name  # already FP16-exact
        nodes.append(node)
        nodes.extend(post)
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def _case(graph: str, ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray], table: Any) -> EstimateCase:
    rows = (table or TOLERANCES)["fp16"][graph]
    floats = {k: v for k, v in ref.items() if np.issubdtype(v.dtype, np.floating)}
    exact = {k: v for k, v in ref.items() if k not in floats}
    tols = {k: rows.get(k, rows[""]) for k in floats} | {"": rows[""]}
    checks = check_outputs(floats, out, tols)
    for k, v in exact.items():  # masks and ids must be identical
        same = np.array_equal(v, out[k])
        checks.append(OutputCheck(k, 0.0 if same else 1.0, 0.0 if same else 1.0, 1.0, 0.0, 0.0, tuple(v.shape)))
    nonfinite = {k: int(np.size(out[k]) - np.isfinite(out[k]).sum()) for k in floats}
    return EstimateCase(graph, checks, nonfinite)


def estimate_inputs(folder: Path, image: Any = None) -> dict[str, Any]:
    """Inputs of the estimate: the demo image (or ``image``), :data:`ESTIMATE_PROMPTS`, two boxes."""
    from ..assets import BPE_FILE
    from ..assets.images import demo_image
    from ..runtime.image import preprocess
    from ..runtime.tokenizer import Tokenizer

    pixels = preprocess(demo_image() if image is None else image, use_torch=False)
    ids = Tokenizer(folder / BPE_FILE)(list(ESTIMATE_PROMPTS))
    p, n = len(ESTIMATE_PROMPTS), len(ESTIMATE_BOXES)
    boxes = np.zeros((p, n, 4), np.float32)
    boxes[:] = np.asarray(ESTIMATE_BOXES, np.float32)
    labels = np.ones((p, n), bool)
    labels[:, -1] = False
    box_mask = np.zeros((p, n), bool)
    box_mask[0, 1:] = True  # prompt 0: one real box, the rest padding
    return {"pixel_values": pixels, "input_ids": ids, "boxes": boxes, "box_labels": labels, "box_mask": box_mask}


def run_per_prompt(session: Any, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` one prompt at a time (the decoder's prompts are independent) and stack the outputs.

    The estimate runs attention unfused (FP16 rounding of the score matrices is what it measures), and one
    prompt's 5184-token attention scores are ~0.9 GB: one prompt at a time keeps the peak at one prompt's
    need instead of all of theirs (tiny model: 7.3 GB with three prompts at once).
    """
    spec = SPECS[graph]
    if "P" not in {d.name for d in spec.dims} or graph != "decoder":
        return run_graph(session, graph, feeds)
    per_prompt = [n for n in spec.input_names if spec.tensor(n).shape[0] == "P"]
    count = len(feeds[per_prompt[0]])
    runs = [run_graph(session, graph, {**feeds, **{n: feeds[n][i : i + 1] for n in per_prompt}}) for i in range(count)]
    return {name: np.concatenate([r[name] for r in runs]) for name in spec.output_names}


def estimate(
    fp32_dir: str | os.PathLike[str],
    decisions: Mapping[str, Sequence[NodeDecision]],
    policy_name: str,
    progress: Callable[[str], None] | None = None,
    table: Mapping[str, Any] | None = None,
    image: Any = None,
) -> EstimateReport:
    """Per-output FP16 error of ``decisions`` on the FP32 export in ``fp32_dir``.

    Args:
        fp32_dir: FP32 export folder.
        decisions: Per graph, from :func:`~sam3_trt.engines.precision.plan`.
        policy_name: For the report.
        progress: Called with one line per step.
        table: Tolerance table override (tests prove the check can fail).
        image: Image to run (default: the bundled demo image).
    """
    import onnx

    from .precision import float_tensors

    say = progress or (lambda _m: None)
    folder = Path(fp32_dir)
    feeds = estimate_inputs(folder, image)
    ref: dict[str, dict[str, np.ndarray]] = {}
    emu: dict[str, dict[str, np.ndarray]] = {}
    cases = []
    for graph in ("vision_encoder", "text_encoder", "decoder"):
        path = folder / SPECS[graph].onnx_file
        graph_feeds = dict(feeds)
        if graph == "decoder":
            graph_feeds |= ref["vision_encoder"] | ref["text_encoder"]
        say(f"fp16 estimate: {graph} FP32 reference")
        ref[graph] = run_per_prompt(ort_session(path), graph, graph_feeds)
        model = onnx.load(str(path), load_external_data=False)
        say(f"fp16 estimate: {graph} with FP16 round-trips")
        with session_for_model(emulation_model(model, decisions[graph], float_tensors(model)), path) as session:
            emu[graph] = run_per_prompt(session, graph, graph_feeds)
            if graph == "decoder":
                chained = run_per_prompt(session, graph, graph_feeds | emu["vision_encoder"] | emu["text_encoder"])
        cases.append(_case(graph, ref[graph], emu[graph], table))
        say("  " + "; ".join(f"{c.name} rel_l2={c.rel_l2:.2e}" for c in cases[-1].checks))
    cases.append(_case("pipeline", ref["decoder"], chained, table))
    inputs = {
        "image": "bundled demo image" if image is None else "caller's image",
        "prompts": list(ESTIMATE_PROMPTS),
        "boxes_cxcywh": [list(b) for b in ESTIMATE_BOXES],
    }
    return EstimateReport(policy_name, cases, inputs)
