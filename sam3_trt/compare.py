"""Array comparison shared by export parity, runtime parity, the CLI and the tests."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """Comparison of one output against its reference.

    Args:
        name: Output name.
        max_abs: Largest absolute difference.
        rel_l2: ``||out - ref|| / ||ref||`` (``0`` when both are zero).
        cosine: Cosine similarity of the flattened arrays (``1`` when both are zero).
        tol_max_abs: Accepted ``max_abs``.
        tol_rel_l2: Accepted ``rel_l2``.
        shape: Compared shape.
    """

    name: str
    max_abs: float
    rel_l2: float
    cosine: float
    tol_max_abs: float
    tol_rel_l2: float
    shape: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return self.max_abs <= self.tol_max_abs and self.rel_l2 <= self.tol_rel_l2

    def describe(self) -> str:
        verdict = "ok  " if self.passed else "FAIL"
        return (
            f"{verdict} {self.name:<16} max_abs={self.max_abs:.3g} (<= {self.tol_max_abs:g})  "
            f"rel_l2={self.rel_l2:.3g} (<= {self.tol_rel_l2:g})  cos={self.cosine:.6f}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        return d


def metrics(reference: Any, candidate: Any) -> tuple[float, float, float]:
    """``(max_abs, rel_l2, cosine)`` of ``candidate`` against ``reference`` in float64.

    Raises:
        ValueError: on a shape mismatch (never broadcast silently).
    """
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(candidate, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {out.shape}")
    if ref.size == 0:
        return 0.0, 0.0, 1.0
    if not np.isfinite(out).all() or not np.isfinite(ref).all():
        return math.inf, math.inf, float("nan")
    diff = out - ref
    max_abs = float(np.abs(diff).max())
    ref_norm = float(np.linalg.norm(ref))
    diff_norm = float(np.linalg.norm(diff))
    rel_l2 = diff_norm / ref_norm if ref_norm > 0 else (0.0 if diff_norm == 0 else math.inf)
    out_norm = float(np.linalg.norm(out))
    if ref_norm == 0 and out_norm == 0:
        cosine = 1.0
    elif ref_norm == 0 or out_norm == 0:
        cosine = 0.0
    else:
        cosine = float(np.dot(ref.ravel(), out.ravel()) / (ref_norm * out_norm))
    return max_abs, rel_l2, cosine


def check_outputs(
    reference: Mapping[str, Any],
    candidate: Mapping[str, Any],
    tolerances: Mapping[str, Mapping[str, float]],
) -> list[OutputCheck]:
    """Compare every output of ``reference`` with ``candidate`` under per-output tolerances.

    Args:
        reference: ``{name: array}`` from the reference (eager).
        candidate: ``{name: array}`` from the candidate; must have every reference name.
        tolerances: ``{name: {"max_abs": x, "rel_l2": y}}`` with a ``""`` default row.
    """
    checks = []
    for name, ref in reference.items():
        if name not in candidate:
            raise KeyError(f"candidate has no output {name!r} (has {sorted(candidate)})")
        tol = tolerances.get(name, tolerances.get(""))
        if tol is None:
            raise KeyError(f"no tolerance for output {name!r} and no default row")
        max_abs, rel_l2, cosine = metrics(ref, candidate[name])
        checks.append(
            OutputCheck(
                name=name,
                max_abs=max_abs,
                rel_l2=rel_l2,
                cosine=cosine,
                tol_max_abs=float(tol["max_abs"]),
                tol_rel_l2=float(tol["rel_l2"]),
                shape=tuple(np.shape(ref)),
            )
        )
    return checks
