"""An FP16 keep-list measured on data, added to a precision policy.

A tensor is *unsafe in FP16* when, on the calibration set, its abs max reaches ``range_fraction`` of
the FP16 limit (65504; default 0.5 leaves a factor 2 of headroom for images outside the set), or its
FP16 round-trip error ``||x - fp16(x)|| / ||x||`` exceeds ``max_rel_err``. Such a tensor must never be
stored in FP16: its producer and every node reading it are kept FP32 (a keep rule per node, exact
name, with the measured reason). Nodes the base policy already keeps FP32 need no rule.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from ..engines.precision import KeepRule, NodeDecision, PrecisionPolicy
from .stats import FP16_MAX, TensorStats


@dataclasses.dataclass(frozen=True)
class Fp16Thresholds:
    """When a tensor is unsafe in FP16.

    Args:
        range_fraction: Unsafe when ``absmax >= range_fraction * 65504``.
        max_rel_err: Unsafe when its FP16 round-trip relative error exceeds this.
    """

    range_fraction: float = 0.5
    max_rel_err: float = 1e-2


def unsafe_tensors(stats: Mapping[str, TensorStats], thresholds: Fp16Thresholds) -> dict[str, str]:
    """``{tensor: why}`` for every tensor that must stay FP32."""
    limit = thresholds.range_fraction * FP16_MAX
    out = {}
    for name, s in stats.items():
        if s.absmax >= limit or s.over_fp16:
            out[name] = f"abs max {s.absmax:.4g} >= {limit:.4g} ({s.over_fp16} values past 65504)"
        elif s.fp16_rel_err > thresholds.max_rel_err:
            out[name] = f"FP16 round-trip error {s.fp16_rel_err:.3g} > {thresholds.max_rel_err:g}"
    return out


def calibrated_policy(
    base: PrecisionPolicy,
    model_graphs: Mapping[str, Any],
    decisions: Mapping[str, list[NodeDecision]],
    stats: Mapping[str, Mapping[str, TensorStats]],
    thresholds: Fp16Thresholds,
) -> tuple[PrecisionPolicy, list[dict[str, Any]]]:
    """``base`` plus keep rules for the nodes around unsafe tensors, and what changed.

    Args:
        base: Starting policy (``default``).
        model_graphs: ``{graph: onnx.ModelProto}`` (external data not needed).
        decisions: ``base``'s decisions per graph (only nodes it makes FP16 get rules).
        stats: Per graph, per tensor statistics.
        thresholds: :class:`Fp16Thresholds`.

    Returns:
        ``(policy, changes)``: each change names the graph, node, op type, tensor and measured reason.
    """
    rules: list[KeepRule] = []
    changes: list[dict[str, Any]] = []
    for graph, model in model_graphs.items():
        fp16_nodes = {d.node: d for d in decisions[graph] if d.precision == "fp16"}
        unsafe = unsafe_tensors(stats[graph], thresholds)
        touching: dict[str, tuple[str, str]] = {}
        for node in model.graph.node:
            for tensor in (*node.input, *node.output):
                if tensor in unsafe and node.name in fp16_nodes and node.name not in touching:
                    touching[node.name] = (tensor, unsafe[tensor])
        for node_name, (tensor, why) in touching.items():
            reason = f"calibration: {graph} tensor {tensor}: {why}"
            rules.append(KeepRule(f"^{re.escape(node_name)}$", reason, graph))
            changes.append(
                {
                    "graph": graph,
                    "node": node_name,
                    "op_type": fp16_nodes[node_name].op_type,
                    "scope": fp16_nodes[node_name].scope,
                    "tensor": tensor,
                    "reason": why,
                }
            )
    policy = dataclasses.replace(
        base,
        name=f"{base.name}+calibrated",
        keep_fp32=base.keep_fp32 + tuple(rules),
        description=f"{base.description}; plus {len(rules)} node(s) kept FP32 from calibration data",
    )
    return policy, changes
