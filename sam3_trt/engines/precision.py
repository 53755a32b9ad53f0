"""Mixed precision as data: which nodes of an FP32 graph run in FP16, and why.

TensorRT 11 has no FP16 builder flag and strongly typed TensorRT 10 networks ignore it: precision lives
in the ONNX graph. A :class:`PrecisionPolicy` decides, node by node, FP16 or FP32:

* ``fp16_op_types``: the op types allowed to run in FP16 (``None``: every op, "blanket FP16");
* ``keep_fp32``: :class:`KeepRule` regexes matched against the node's *scope*, the torch module path
  the exporter keeps in node metadata (``backbone.vision_backbone.trunk.blocks.3.mlp.fc1/linear_7``),
  falling back to the node name; a match keeps the node in FP32, with the rule's reason.

The default policy follows NVIDIA's SAM3 TensorRT recipe: the matmuls (q/k/v, output projection, fc2),
convolutions and attention (its two matmuls and softmax) run in FP16; LayerNorm, GELU, RoPE, residual
adds, every other elementwise op and the ViT's ``fc1`` stay FP32. Blanket FP16 is known to break the
vision trunk of trained SAM3 weights (LayerNorm and attention overflow).

:func:`plan` turns a policy into per-node decisions; :func:`~sam3_trt.engines.mixed.convert_export`
applies them with onnxconverter-common, and :mod:`sam3_trt.engines.fp16_estimate` measures their error
without a GPU.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import Sam3TrtError

#: Node metadata key the exporter keeps: the node's torch module path (see ``export/exporter.py``).
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"

#: Op types never converted: onnxconverter-common's own block list (data-dependent shapes, index math),
#: shape ops, and ``Cast`` (the converter retypes a ``Cast`` to float into one to float16 without
#: retyping its output, which ONNX Runtime then rejects).
NEVER_FP16 = frozenset(
    {
        "Range",
        "CumSum",
        "TopK",
        "NonMaxSuppression",
        "RoiAlign",
        "Resize",
        "Upsample",
        "Min",
        "Max",
        "Shape",
        "Size",
        "Cast",
    }
)


@dataclasses.dataclass(frozen=True)
class KeepRule:
    """Keep nodes whose scope matches ``pattern`` (``re.search``) in FP32.

    Args:
        pattern: Regular expression over the node's scope (or its name).
        reason: Why (shown in the precision report).
        graph: Only in this graph (``vision_encoder``...); ``None``: every graph.
    """

    pattern: str
    reason: str
    graph: str | None = None

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise Sam3TrtError(f"keep-FP32 pattern {self.pattern!r} is not a valid regular expression: {exc}") from None


@dataclasses.dataclass(frozen=True)
class PrecisionPolicy:
    """Which nodes run in FP16.

    Args:
        name: Policy name (recorded in manifests).
        fp16_op_types: Op types that may run in FP16; ``None`` allows every op (blanket FP16).
        keep_fp32: Rules keeping matching nodes in FP32 (they win over ``fp16_op_types``).
        description: One line for reports.
    """

    name: str
    fp16_op_types: frozenset[str] | None
    keep_fp32: tuple[KeepRule, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fp16_op_types": sorted(self.fp16_op_types) if self.fp16_op_types is not None else None,
            "keep_fp32": [dataclasses.asdict(r) for r in self.keep_fp32],
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrecisionPolicy:
        """Policy from :meth:`to_dict` output, or a user file with ``extends``.

        ``{"extends": "default", "keep_fp32": [{"pattern": "...", "reason": "..."}]}`` adds rules to a
        named policy; ``fp16_op_types`` replaces its op list.
        """
        known = {"name", "fp16_op_types", "keep_fp32", "description", "extends"}
        unknown = set(data) - known
        if unknown:
            raise Sam3TrtError(f"precision policy has unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        base = POLICIES[_policy_key(data["extends"])] if "extends" in data else None
        try:
            rules = tuple(
                KeepRule(str(r["pattern"]), str(r.get("reason", "user rule"))) for r in data.get("keep_fp32", ())
            )
        except (TypeError, KeyError):
            raise Sam3TrtError(
                'precision policy: keep_fp32 must be a list of {"pattern": ..., "reason": ...}'
            ) from None
        if "fp16_op_types" in data:
            ops = data["fp16_op_types"]
            fp16_ops = frozenset(str(o) for o in ops) if ops is not None else None
        elif base is not None:
            fp16_ops = base.fp16_op_types
        else:
            raise Sam3TrtError("precision policy needs fp16_op_types or extends")
        return cls(
            name=str(data.get("name", f"{base.name}+custom" if base else "custom")),
            fp16_op_types=fp16_ops,
            keep_fp32=(base.keep_fp32 if base else ()) + rules,
            description=str(data.get("description", base.description if base else "")),
        )

    def with_rules(self, rules: Iterable[KeepRule], name: str | None = None) -> PrecisionPolicy:
        """This policy plus extra keep-FP32 rules (user ``--keep-fp32`` or calibration)."""
        extra = tuple(rules)
        if not extra:
            return self
        return dataclasses.replace(self, name=name or f"{self.name}+{len(extra)}", keep_fp32=self.keep_fp32 + extra)


#: NVIDIA's SAM3 recipe (see the module docstring).
DEFAULT_POLICY = PrecisionPolicy(
    name="default",
    fp16_op_types=frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Softmax"}),
    keep_fp32=(
        KeepRule(r"\.mlp\.fc1(/|$)", "ViT fc1: its output feeds GELU with a wide range (NVIDIA's SAM3 recipe)"),
    ),
    description="matmuls, convolutions and attention in FP16; norms, activations, RoPE, residuals and fc1 in FP32",
)

#: The attention core of every attention module: ``scaled_dot_product_attention`` (its QK^T and PV
#: matmuls, scale and softmax) and nn.MultiheadAttention's explicit ``bmm``/``baddbmm``/``softmax`` path.
ATTENTION_CORE = r"/(scaled_dot_product_attention|softmax|bmm|baddbmm)(_\d+)?$"

#: The default policy with the attention core in FP32: the cure published for SAM3 FP16 accuracy loss
#: (fused FP16 attention; NVIDIA/TensorRT#4837), measured beside the default by ``gpu-check``.
ATTENTION_FP32_POLICY = dataclasses.replace(
    DEFAULT_POLICY.with_rules(
        [KeepRule(ATTENTION_CORE, "attention core (QK^T, softmax, PV) in FP32")], name="attention-fp32"
    ),
    description="the default policy with the attention core (QK^T, softmax, PV) in FP32",
)

#: Every op in FP16 (what a builder's FP16 flag does): for comparisons, never the default.
BLANKET_FP16 = PrecisionPolicy(
    name="blanket",
    fp16_op_types=None,
    description="every float op in FP16 (no keep-list): known to overflow on trained SAM3 weights",
)

POLICIES: dict[str, PrecisionPolicy] = {p.name: p for p in (DEFAULT_POLICY, ATTENTION_FP32_POLICY, BLANKET_FP16)}


def _policy_key(name: str) -> str:
    if name not in POLICIES:
        raise Sam3TrtError(f"unknown precision policy {name!r}; use one of {sorted(POLICIES)} or a JSON file")
    return name


def load_policy(source: str | os.PathLike[str] | None = None, keep_fp32: Sequence[str] = ()) -> PrecisionPolicy:
    """A named policy (``default``, ``blanket``) or a JSON file, plus ``--keep-fp32`` patterns.

    Args:
        source: Policy name or JSON file path (``None``: ``default``).
        keep_fp32: Extra scope regexes to keep in FP32.
    """
    if source is None:
        policy = DEFAULT_POLICY
    elif str(source) in POLICIES:
        policy = POLICIES[str(source)]
    else:
        path = Path(source)
        if not path.is_file():
            raise Sam3TrtError(
                f"--policy {source}: neither a policy name ({sorted(POLICIES)}) nor an existing JSON file"
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Sam3TrtError(f"--policy {path}: not a readable JSON file ({exc})") from None
        if not isinstance(data, dict):
            raise Sam3TrtError(f"--policy {path}: expected a JSON object, got {type(data).__name__}")
        policy = PrecisionPolicy.from_dict(data)
    return policy.with_rules(KeepRule(p, "--keep-fp32") for p in keep_fp32)


@dataclasses.dataclass(frozen=True)
class NodeDecision:
    """Precision of one node.

    Args:
        node: Node name.
        op_type: ONNX op type.
        scope: Module path and op (from node metadata) or the node name.
        precision: ``"fp16"`` or ``"fp32"``.
        reason: Why.
    """

    node: str
    op_type: str
    scope: str
    precision: str
    reason: str


def node_scope(node: Any) -> str:
    """``<deepest module path>/<aten op>`` from the exporter's name-scope metadata, else the node name."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            modules = [s for s in scopes[:-1] if s]
            return f"{modules[-1] if modules else ''}/{scopes[-1] if scopes else node.name}"
    return node.name


def float_tensors(model: Any) -> set[str]:
    """Names of FP32 tensors in ``model`` (shape inference over a model loaded without external data)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = inferred.graph
    names = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for v in [*graph.input, *graph.output, *graph.value_info]:
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            names.add(v.name)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT:
                    names.update(node.output)
    return names


def plan(
    model: Any, policy: PrecisionPolicy, floats: set[str] | None = None, graph: str | None = None
) -> list[NodeDecision]:
    """Decide FP16 or FP32 for every node of ``model``'s main graph.

    Args:
        model: ``onnx.ModelProto`` (external data need not be loaded).
        policy: The policy.
        floats: FP32 tensor names (default: from :func:`float_tensors`); nodes touching none stay as
            they are (``"fp32"``, reason ``"no float tensors"``).
        graph: The graph's name, for rules limited to one graph.
    """
    floats = float_tensors(model) if floats is None else floats
    compiled = [(re.compile(r.pattern), r) for r in policy.keep_fp32 if r.graph is None or r.graph == graph]
    decisions = []
    for node in model.graph.node:
        scope = node_scope(node)
        if not any(t in floats for t in (*node.input, *node.output)):
            precision, reason = "fp32", "no float tensors"
        elif node.op_type in NEVER_FP16:
            precision, reason = "fp32", f"{node.op_type} is never converted (index, shape or type math)"
        elif policy.fp16_op_types is not None and node.op_type not in policy.fp16_op_types:
            precision, reason = "fp32", f"{node.op_type} is not in the policy's FP16 op types"
        else:
            rule = next((r for rx, r in compiled if rx.search(scope) or rx.search(node.name)), None)
            if rule is not None:
                precision, reason = "fp32", f"keep rule {rule.pattern!r}: {rule.reason}"
            else:
                precision, reason = "fp16", "policy"
        decisions.append(NodeDecision(node.name, node.op_type, scope, precision, reason))
    return decisions


def summarize(decisions: Sequence[NodeDecision]) -> dict[str, Any]:
    """Counts for a report: nodes per precision, FP16 op types, FP32 nodes per reason, kept compute nodes."""
    heavy = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Softmax"}
    return {
        "nodes": len(decisions),
        "fp16_nodes": sum(d.precision == "fp16" for d in decisions),
        "fp16_op_types": dict(Counter(d.op_type for d in decisions if d.precision == "fp16").most_common()),
        "fp32_reasons": dict(
            Counter(d.reason for d in decisions if d.precision == "fp32" and d.reason != "no float tensors")
        ),
        "fp32_compute_nodes": [
            {"node": d.node, "op_type": d.op_type, "scope": d.scope, "reason": d.reason}
            for d in decisions
            if d.precision == "fp32" and d.op_type in heavy
        ],
    }
