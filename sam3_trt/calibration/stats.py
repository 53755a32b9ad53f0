"""Per-tensor activation statistics of the FP32 graphs over a calibration set, streamed in chunks.

Exposing every intermediate of the full-size vision graph at once needs ~10 GB per image, so the
graph's float tensors are split into chunks whose estimated size fits ``chunk_bytes``; each chunk is a
copy of the graph with those tensors added as outputs, run over every image and reduced at once
(nothing but running sums survives a chunk). Per tensor: min, max, abs max, a log2 histogram of
``|x|`` (mergeable, gives percentiles), the FP16 round-trip error ``||x - fp16(x)|| / ||x||``, and the
count of values past the FP16 limit (65504) or below its smallest normal (6.1e-5, losing precision).

Statistics are cached per (graph sha256, calibration set sha256): repeated runs are cheap.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 6.103515625e-05
#: log2 bins of |x| from 2^-24 to 2^17 (FP16's whole range and past it); bin 0 holds exact zeros.
HIST_LO, HIST_HI = -24, 17
CACHE_VERSION = 2
#: Values per tensor and sample that feed the histogram and FP16 error (evenly strided).
SAMPLE = 1 << 20
#: Ops that only move or select values: their outputs' ranges are their inputs' (not exposed).
LAYOUT_OPS = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand", "Tile", "Slice", "Gather",
     "GatherND", "GatherElements", "Concat", "Split", "Shape", "Constant", "ConstantOfShape"}
)  # fmt: skip


@dataclasses.dataclass
class TensorStats:
    """Running statistics of one tensor (see the module docstring)."""

    name: str
    producer: str
    count: int = 0
    min: float = math.inf
    max: float = -math.inf
    absmax: float = 0.0
    sum_sq: float = 0.0
    fp16_err_sq: float = 0.0
    over_fp16: int = 0
    subnormal_fp16: int = 0
    nonfinite: int = 0
    hist: list[int] = dataclasses.field(default_factory=lambda: [0] * (HIST_HI - HIST_LO + 2))

    def update(self, x: np.ndarray) -> None:
        """Add the values of ``x``.

        Range, overflow and non-finite counts are exact; the histogram, FP16 error and subnormal count
        use at most :data:`SAMPLE` evenly strided values per call (bounded time and memory on the
        decoder's 200-query mask tensors).
        """
        flat = np.asarray(x, dtype=np.float32).ravel()
        finite = np.isfinite(flat)
        bad = int(flat.size - finite.sum())
        self.nonfinite += bad
        if bad:
            flat = flat[finite]
        if not flat.size:
            return
        self.count += int(flat.size)
        lo, hi = float(flat.min()), float(flat.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.absmax = max(self.absmax, abs(lo), abs(hi))
        if max(abs(lo), abs(hi)) > FP16_MAX:
            self.over_fp16 += int((np.abs(flat) > FP16_MAX).sum())
        sample = flat[:: max(1, flat.size // SAMPLE)].astype(np.float64)
        a = np.abs(sample)
        self.sum_sq += float(np.dot(sample, sample))
        self.subnormal_fp16 += int(((a > 0) & (a < FP16_MIN_NORMAL)).sum())
        with np.errstate(over="ignore"):
            rounded = sample.astype(np.float16).astype(np.float64)
        err = np.where(a > FP16_MAX, a, sample - rounded)  # an overflow loses the whole value
        self.fp16_err_sq += float(np.dot(err, err))
        nz = a[a > 0]
        bins = np.clip(np.floor(np.log2(nz)).astype(np.int64) - HIST_LO + 1, 1, HIST_HI - HIST_LO + 1)
        counts = np.bincount(bins, minlength=len(self.hist))
        counts[0] += int(a.size - nz.size)
        self.hist = [int(h + c) for h, c in zip(self.hist, counts, strict=True)]

    @property
    def fp16_rel_err(self) -> float:
        """``||x - fp16(x)|| / ||x||`` over everything seen (``inf`` counts as losing the value)."""
        return math.sqrt(self.fp16_err_sq / self.sum_sq) if self.sum_sq > 0 else 0.0

    def percentile_abs(self, q: float) -> float:
        """Upper edge of the log2 bin holding the ``q``-th percentile of ``|x|`` (0 <= q <= 100)."""
        total = sum(self.hist)
        if not total:
            return 0.0
        target = q / 100 * total
        running = 0
        for i, c in enumerate(self.hist):
            running += c
            if running >= target:
                return 0.0 if i == 0 else float(2.0 ** (HIST_LO + i))
        return self.absmax

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(fp16_rel_err=self.fp16_rel_err, p99_9_abs=self.percentile_abs(99.9))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorStats:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


def _dim_size(dim: Any, sizes: Mapping[str, int]) -> int | None:
    """A dimension's size: its value, or its symbol (``P``) or expression (``200*P``) evaluated on ``sizes``."""
    if dim.HasField("dim_value") and dim.dim_value > 0:
        return int(dim.dim_value)
    expr = dim.dim_param if dim.HasField("dim_param") else ""
    if not expr or not re.fullmatch(r"[A-Za-z0-9_ +*()-]+", expr):
        return None
    try:
        # the regex above admits only digits, names, + - * and parentheses: no calls, no attributes
        value = eval(expr, {"__builtins__": {}}, dict(sizes))
    except (NameError, SyntaxError, TypeError):
        return None  # unk__ symbols: unresolved
    return int(value) if isinstance(value, int) and value > 0 else None


def tensors_to_watch(
    model: Any, sizes: Mapping[str, int] | None = None, names: Collection[str] | None = None
) -> list[tuple[str, str, int | None]]:
    """``(tensor, producer node, bytes or None when unresolved)`` for every float tensor a value-changing node produces.

    Args:
        model: The graph (external data not needed).
        sizes: Dynamic sizes of the run (``{"P": 4, "N": 1}``) to size symbolic dimensions.
        names: Watch exactly these node outputs instead (layout ops' outputs included).
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    values = {v.name: v for v in (*inferred.value_info, *inferred.output)}
    out = []
    for node in model.graph.node:
        if names is None and node.op_type in LAYOUT_OPS:
            continue
        for name in node.output:
            if names is not None and name not in names:
                continue
            v = values.get(name)
            if v is not None and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                shape = v.type.tensor_type.shape
                dims = (
                    [_dim_size(d, sizes or {}) for d in shape.dim] if v.type.tensor_type.HasField("shape") else [None]
                )
                out.append((name, node.name, None if None in dims else 4 * math.prod(dims)))
    return out


def next_chunk(
    remaining: Sequence[tuple[str, str, int | None]], chunk_bytes: int, unknown_bytes: int
) -> list[tuple[str, str, int | None]]:
    """The longest prefix of ``remaining`` whose estimated bytes fit ``chunk_bytes`` (at least one tensor).

    Tensors whose size shape inference could not resolve (``None``) count as ``unknown_bytes``.
    """
    out: list[tuple[str, str, int | None]] = []
    total = 0
    for item in remaining:
        size = item[2] if item[2] is not None else unknown_bytes
        if out and total + size > chunk_bytes:
            break
        out.append(item)
        total += size
    return out


def collect_stats(
    graph_path: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    input_names: Sequence[str],
    chunk_bytes: int = 4 << 30,
    progress: Callable[[str], None] | None = None,
    tensors: Collection[str] | None = None,
) -> dict[str, TensorStats]:
    """Statistics of every float tensor of one graph over ``feeds``.

    Args:
        graph_path: FP32 ``.onnx`` file.
        feeds: One input dict per sample.
        input_names: The graph's inputs (taken from each feed).
        chunk_bytes: Estimated output bytes per chunk (one chunk's outputs are held at once).
        progress: Called with one line per chunk.
        tensors: Only these tensors (graph inputs among them are read from ``feeds``); default: every
            float tensor a value-changing node produces.
    """
    import onnx

    from ..ort import session_for_model

    say = progress or (lambda _m: None)
    from ..specs import SPECS

    model = onnx.load(str(graph_path), load_external_data=False)
    spec = next((s for s in SPECS.values() if s.input_names == list(input_names)), None)
    sizes = spec.infer_sizes({n: feeds[0][n] for n in input_names}) if spec is not None and feeds else {}
    watch = tensors_to_watch(model, sizes, None if tensors is None else set(tensors))
    stats = {name: TensorStats(name, producer) for name, producer, _ in watch}
    for name in input_names if tensors is not None else ():
        if name in tensors:
            stats[name] = TensorStats(name, "graph input")
            for feed in feeds:
                stats[name].update(np.asarray(feed[name], dtype=np.float32))
    remaining = list(watch)
    # unresolved sizes are estimated by the largest unresolved tensor seen so far (adapts after each chunk)
    unknown_bytes = 64 << 20
    done = 0
    while remaining:
        part = next_chunk(remaining, chunk_bytes, unknown_bytes)
        remaining = remaining[len(part) :]
        done += len(part)
        say(
            f"stats: {graph_path.stem}: {done}/{len(watch)} tensors ({len(part)} in this pass) over {len(feeds)} samples"
        )
        edited = onnx.ModelProto()
        edited.CopyFrom(model)
        existing = {o.name for o in edited.graph.output}
        names = [name for name, _, _ in part]
        for name in names:
            if name not in existing:
                edited.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        with session_for_model(edited, graph_path, optimize=True) as session:
            for feed in feeds:
                outs = session.run(names, {n: feed[n] for n in input_names})
                for (name, _, size), value in zip(part, outs, strict=True):
                    stats[name].update(value)
                    if size is None:
                        unknown_bytes = max(unknown_bytes, int(value.nbytes))
                del outs
        del edited
    return stats


def save_stats(path: Path, key: Mapping[str, str], stats: Mapping[str, TensorStats]) -> None:
    """Write statistics as JSON with their cache key."""
    path.write_text(
        json.dumps({"version": CACHE_VERSION, "key": dict(key), "tensors": [s.to_dict() for s in stats.values()]})
        + "\n"
    )


def load_cached(path: Path, key: Mapping[str, str]) -> dict[str, TensorStats] | None:
    """Statistics from ``path`` when its key matches (same graph and calibration set), else ``None``."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("version") != CACHE_VERSION or data.get("key") != dict(key):
        return None
    return {d["name"]: TensorStats.from_dict(d) for d in data["tensors"]}
