"""Graph I/O declared once, as data.

Every stage reads these specs: the exporter (wrapper I/O names, dynamic shapes, example inputs), the
TensorRT profile builder (min/opt/max per dynamic axis), the runtime (binding by name, buffer sizes,
feed validation) and the tests (input generation, "every output has a tolerance").

This module imports only numpy, so it is usable in a torch-free, TensorRT-free install.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import Sam3TrtError

#: Image side the graphs are exported for (sam3's ``resolution``).
RESOLUTION = 1008
#: Token context of sam3's text encoder.
CONTEXT_LENGTH = 32
#: Object queries of sam3's DETR decoder.
NUM_QUERIES = 200
#: Model width of the neck, fusion encoder and decoder.
D_MODEL = 256


@dataclasses.dataclass(frozen=True)
class Dim:
    """A dynamic axis with its TensorRT optimisation-profile range.

    Args:
        name: Symbol shared by every tensor that has this axis (``"P"`` is the prompt count).
        min: Smallest size the graphs and engines accept.
        opt: Size TensorRT tunes kernels for.
        max: Largest size the engines accept.
    """

    name: str
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"Dim {self.name}: need 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")


Shape = tuple[int | str, ...]


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Args:
        name: ONNX tensor name.
        dtype: numpy dtype name (``"float32"``, ``"int64"``, ``"bool"``).
        shape: Static sizes as ints, dynamic axes by their :class:`Dim` name.
        doc: What the tensor holds, in one line.
    """

    name: str
    dtype: str
    shape: Shape
    doc: str = ""

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def dynamic_axes(self) -> dict[int, str]:
        """Axis index -> Dim name for the dynamic axes of this tensor."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def resolve(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """Concrete shape with every dynamic axis taken from ``sizes``."""
        return tuple(d if isinstance(d, int) else int(sizes[d]) for d in self.shape)


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    """Inputs, outputs and dynamic axes of one exported graph.

    Args:
        name: Graph name; the ONNX file is ``{name}.onnx`` and the engine ``{name}.engine``.
        inputs: Input tensors in call order.
        outputs: Output tensors in return order.
        dims: Dynamic axes used by the tensors, with their ranges.
        doc: What the graph computes.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: tuple[Dim, ...]
    doc: str = ""

    @property
    def onnx_file(self) -> str:
        return f"{self.name}.onnx"

    @property
    def engine_file(self) -> str:
        return f"{self.name}.engine"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dim(self, name: str) -> Dim:
        for d in self.dims:
            if d.name == name:
                return d
        raise KeyError(f"graph {self.name} has no dynamic axis {name!r}")

    def tensor(self, name: str) -> TensorSpec:
        for t in self.inputs + self.outputs:
            if t.name == name:
                return t
        raise KeyError(f"graph {self.name} has no tensor {name!r}")

    def sizes(self, which: str) -> dict[str, int]:
        """``{dim name: size}`` at ``which`` in ``("min", "opt", "max")``."""
        return {d.name: getattr(d, which) for d in self.dims}

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """TensorRT optimisation profile: ``{input: (min, opt, max)}`` shapes from the dims."""
        return {
            t.name: (t.resolve(self.sizes("min")), t.resolve(self.sizes("opt")), t.resolve(self.sizes("max")))
            for t in self.inputs
        }

    def infer_sizes(self, feeds: Mapping[str, Any]) -> dict[str, int]:
        """Read every dynamic axis from ``feeds`` and check all shapes and dtypes against the spec.

        Raises:
            Sam3TrtError: naming the input, the bad value and the accepted range.
        """
        sizes: dict[str, int] = {}
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise Sam3TrtError(f"{self.name}: missing inputs {missing}; expected {self.input_names}")
        extra = [n for n in feeds if n not in self.input_names]
        if extra:
            raise Sam3TrtError(f"{self.name}: unknown inputs {extra}; expected {self.input_names}")
        for t in self.inputs:
            value = feeds[t.name]
            shape = tuple(int(s) for s in value.shape)
            if len(shape) != len(t.shape):
                raise Sam3TrtError(f"For input: {t.name}, got rank {len(shape)} shape {shape}, expected {t.shape}")
            dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
            if dtype and dtype != t.dtype:
                raise Sam3TrtError(f"For input: {t.name}, got dtype {dtype}, expected {t.dtype}")
            for axis, (want, got) in enumerate(zip(t.shape, shape, strict=True)):
                if isinstance(want, int):
                    if want != got:
                        raise Sam3TrtError(
                            f"For input: {t.name}, axis {axis} is {got}, expected {want} (shape {t.shape})"
                        )
                    continue
                dim = self.dim(want)
                if want in sizes and sizes[want] != got:
                    raise Sam3TrtError(
                        f"For input: {t.name}, axis {axis} ({want}) is {got} but another input has {want}={sizes[want]}"
                    )
                if not dim.min <= got <= dim.max:
                    raise Sam3TrtError(
                        f"For input: {t.name}, failed to set shape to: {shape}: {want}={got} is outside "
                        f"[{dim.min}, {dim.max}] (re-export or rebuild with a larger max)"
                    )
                sizes[want] = got
        return sizes

    def output_shapes(self, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        """Concrete output shapes for the dynamic sizes of one call (for buffer allocation)."""
        return {t.name: t.resolve(sizes) for t in self.outputs}

    def example_inputs(self, sizes: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Deterministic inputs that respect the spec (random features, valid tokens and boxes).

        Args:
            sizes: Dynamic sizes; defaults to the ``opt`` sizes.
            seed: numpy seed.
        """
        rng = np.random.default_rng(seed)
        sizes = dict(self.sizes("opt") if sizes is None else sizes)
        feeds: dict[str, np.ndarray] = {}
        for t in self.inputs:
            shape = t.resolve(sizes)
            feeds[t.name] = _example_tensor(t.name, shape, t.np_dtype, rng)
        return feeds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GraphSpec:
        def tensor(d: Mapping[str, Any]) -> TensorSpec:
            return TensorSpec(d["name"], d["dtype"], tuple(d["shape"]), d.get("doc", ""))

        return cls(
            name=data["name"],
            inputs=tuple(tensor(t) for t in data["inputs"]),
            outputs=tuple(tensor(t) for t in data["outputs"]),
            dims=tuple(Dim(**d) for d in data["dims"]),
            doc=data.get("doc", ""),
        )


def _example_tensor(name: str, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    if name == "input_ids":
        # sot, a few word tokens, eot, then zero padding: what sam3's tokenizer produces
        ids = np.zeros(shape, dtype=dtype)
        for row in ids:
            n = int(rng.integers(1, 6))
            row[0] = 49406
            row[1 : 1 + n] = rng.integers(256, 49000, size=n)
            row[1 + n] = 49407
        return ids
    if name == "text_mask":
        mask = np.ones(shape, dtype=bool)
        for row in mask:
            row[: int(rng.integers(3, 8))] = False
        return mask
    if name == "boxes":
        centre = rng.uniform(0.2, 0.8, size=(*shape[:-1], 2))
        size = rng.uniform(0.05, 0.5, size=(*shape[:-1], 2))
        return np.concatenate([centre, size], axis=-1).astype(dtype)
    if name == "box_labels":
        return rng.integers(0, 2, size=shape).astype(bool)
    if name == "box_mask":
        return np.zeros(shape, dtype=bool)
    if dtype == np.float32:
        return rng.standard_normal(shape, dtype=np.float32)
    raise KeyError(f"no example generator for {name} ({dtype})")


_B = Dim("B", 1, 1, 4)
_P = Dim("P", 1, 1, 16)
_N = Dim("N", 1, 1, 16)

VISION_ENCODER = GraphSpec(
    name="vision_encoder",
    doc="ViT trunk + FPN neck: normalised image -> three feature levels (strides 3.5, 7, 14).",
    inputs=(TensorSpec("pixel_values", "float32", ("B", 3, RESOLUTION, RESOLUTION), "resized image, (x/255-0.5)/0.5"),),
    outputs=(
        TensorSpec("fpn0", "float32", ("B", D_MODEL, 288, 288), "backbone_fpn[0]"),
        TensorSpec("fpn1", "float32", ("B", D_MODEL, 144, 144), "backbone_fpn[1]"),
        TensorSpec("fpn2", "float32", ("B", D_MODEL, 72, 72), "backbone_fpn[2] (vision_features)"),
    ),
    dims=(_B,),
)

TEXT_ENCODER = GraphSpec(
    name="text_encoder",
    doc="Text transformer + resizer: token ids -> per-token features and padding mask.",
    inputs=(TensorSpec("input_ids", "int64", ("P", CONTEXT_LENGTH), "sam3 BPE ids, 0-padded"),),
    outputs=(
        TensorSpec("text_features", "float32", ("P", CONTEXT_LENGTH, D_MODEL), "language_features, batch first"),
        TensorSpec("text_mask", "bool", ("P", CONTEXT_LENGTH), "language_mask: True at padding"),
    ),
    dims=(_P,),
)

DECODER = GraphSpec(
    name="decoder",
    doc=(
        "Geometry encoder + fusion encoder + DETR decoder + scoring + mask head for one image and P prompts, "
        "each with N boxes. Image features have batch 1 and are broadcast over prompts, not copied. "
        "A prompt without boxes passes one box with box_mask=True (padding)."
    ),
    inputs=(
        TensorSpec("fpn0", "float32", (1, D_MODEL, 288, 288), "vision_encoder output for one image"),
        TensorSpec("fpn1", "float32", (1, D_MODEL, 144, 144), "vision_encoder output for one image"),
        TensorSpec("fpn2", "float32", (1, D_MODEL, 72, 72), "vision_encoder output for one image"),
        TensorSpec("text_features", "float32", ("P", CONTEXT_LENGTH, D_MODEL), "text_encoder output"),
        TensorSpec("text_mask", "bool", ("P", CONTEXT_LENGTH), "text_encoder output"),
        TensorSpec("boxes", "float32", ("P", "N", 4), "box prompts, normalised cx, cy, w, h in [0, 1]"),
        TensorSpec("box_labels", "bool", ("P", "N"), "True for a positive box, False for a negative one"),
        TensorSpec("box_mask", "bool", ("P", "N"), "True where the box is padding (right-padded)"),
    ),
    outputs=(
        TensorSpec("pred_logits", "float32", ("P", NUM_QUERIES), "per-query class logit"),
        TensorSpec("pred_boxes", "float32", ("P", NUM_QUERIES, 4), "normalised cx, cy, w, h"),
        TensorSpec("presence_logit", "float32", ("P", 1), "presence_logit_dec"),
        TensorSpec("pred_masks", "float32", ("P", NUM_QUERIES, 288, 288), "mask logits at 288x288"),
        TensorSpec("semantic_seg", "float32", ("P", 1, 288, 288), "semantic segmentation logits"),
    ),
    dims=(_P, _N),
)

#: The three graphs, in pipeline order.
SPECS: dict[str, GraphSpec] = {s.name: s for s in (VISION_ENCODER, TEXT_ENCODER, DECODER)}


def get_spec(name: str) -> GraphSpec:
    """Spec of graph ``name``, with a clear error for an unknown name."""
    try:
        return SPECS[name]
    except KeyError:
        raise Sam3TrtError(f"unknown graph {name!r}; expected one of {sorted(SPECS)}") from None


def specs_to_json(specs: Mapping[str, GraphSpec] = SPECS) -> str:
    """Serialise specs for a manifest or an engine folder."""
    return json.dumps({n: s.to_dict() for n, s in specs.items()}, indent=2)


def specs_from_dict(data: Mapping[str, Any]) -> dict[str, GraphSpec]:
    """Inverse of :func:`specs_to_json` (after ``json.loads``)."""
    return {n: GraphSpec.from_dict(d) for n, d in data.items()}
