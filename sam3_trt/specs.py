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
    if name == "memory_tpos":  # temporal slot of each memory frame: 0 (prompted frame) .. 6
        return rng.integers(0, TRACKER_MEMORY_SLOTS, size=shape).astype(dtype)
    if name == "obj_ptr_tpos":  # signed frame distance / (pointer window - 1)
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if name == "point_coords":
        return rng.uniform(0.0, RESOLUTION, size=shape).astype(dtype)
    if name == "point_labels":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if name == "mask_prompt":
        return (rng.random(shape) > 0.5).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
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


#: Side of the tracker's low-resolution mask logits (4 x 72).
LOW_RES = 288
#: Memory slots of sam3's tracker (``num_maskmem``): the prompted frame + 6 previous frames.
TRACKER_MEMORY_SLOTS = 7
#: Width of the tracker's spatial memories (``mem_dim``).
TRACKER_MEM_DIM = 64

_O = Dim("O", 1, 1, 16)  # tracked objects
_M = Dim("M", 1, 7, 10)  # memory frames: up to 4 prompted frames + 6 previous frames
_Q = Dim("Q", 1, 8, 19)  # object pointers: up to 4 prompted frames + 15 previous frames
_K = Dim("K", 1, 2, 16)  # point prompts per object (a box is two points)
#: Side the tracker's memory encoder downsamples masks from (its ``interpol_size``), and the side of the
#: tracker's mask prompts (upstream ``input_mask_size``: ``add_new_mask`` resizes every mask to it).
MEMORY_MASK_SIDE = 1152
_S = Dim("S", LOW_RES, LOW_RES, MEMORY_MASK_SIDE)  # side of the mask logits given to the memory encoder

VIDEO_VISION_ENCODER = GraphSpec(
    name="video_vision_encoder",
    doc=(
        "ViT trunk + both necks (upstream's video model): one pass gives the detector's three levels and the "
        "tracker's (sam2_convs) three levels."
    ),
    inputs=(VISION_ENCODER.inputs[0],),
    outputs=(
        *VISION_ENCODER.outputs,
        TensorSpec("tracker_fpn0", "float32", ("B", D_MODEL, 288, 288), "sam2_backbone_out backbone_fpn[0]"),
        TensorSpec("tracker_fpn1", "float32", ("B", D_MODEL, 144, 144), "sam2_backbone_out backbone_fpn[1]"),
        TensorSpec("tracker_fpn2", "float32", ("B", D_MODEL, 72, 72), "sam2_backbone_out backbone_fpn[2]"),
    ),
    dims=(_B,),
)

TRACKER_MEMORY_ATTENTION = GraphSpec(
    name="tracker_memory_attention",
    doc=(
        "Tracker memory attention (upstream _prepare_memory_conditioned_features on a frame with memories): "
        "one frame's features attend to M memory frames and Q object pointers, per object."
    ),
    inputs=(
        TensorSpec("pix_feat", "float32", (1, D_MODEL, 72, 72), "tracker neck top level of the frame"),
        TensorSpec("memory", "float32", ("O", "M", TRACKER_MEM_DIM, 72, 72), "tracker_memory_encoder outputs"),
        TensorSpec("memory_tpos", "int64", ("M",), "temporal slot per memory frame: 0 prompted, 1..6 previous"),
        TensorSpec("obj_ptrs", "float32", ("O", "Q", D_MODEL), "tracker_mask_head obj_ptr of earlier frames"),
        TensorSpec("obj_ptr_tpos", "float32", ("Q",), "signed frame distance / (pointer window - 1)"),
    ),
    outputs=(TensorSpec("pix_feat_with_mem", "float32", ("O", D_MODEL, 72, 72), "memory-conditioned features"),),
    dims=(_O, _M, _Q),
)

TRACKER_MASK_HEAD = GraphSpec(
    name="tracker_mask_head",
    doc=(
        "Tracker SAM heads (upstream _forward_sam_heads): prompt encoder + two-way mask decoder for O objects, "
        "points, a mask prompt, or refining points with the object's earlier logits on the frame; multimask "
        "choice (best IoU, or stability fallback) made in the graph."
    ),
    inputs=(
        TensorSpec("image_embed", "float32", ("O", D_MODEL, 72, 72), "pix_feat_with_mem, or the neck's top level"),
        TensorSpec("no_memory", "bool", ("O",), "True on an object's prompted frame: add the no-memory embedding"),
        TensorSpec("tracker_fpn0", "float32", (1, D_MODEL, LOW_RES, LOW_RES), "tracker neck level 0"),
        TensorSpec("tracker_fpn1", "float32", (1, D_MODEL, 144, 144), "tracker neck level 1"),
        TensorSpec("point_coords", "float32", ("O", "K", 2), "x, y in pixels of the 1008x1008 frame"),
        TensorSpec("point_labels", "int32", ("O", "K"), "1 positive, 0 negative, 2/3 box corners, -1 padding"),
        TensorSpec(
            "mask_prompt", "float32", ("O", 1, MEMORY_MASK_SIDE, MEMORY_MASK_SIDE), "mask prompt (0..1), 1152x1152"
        ),
        TensorSpec("use_mask_prompt", "bool", ("O",), "False: no mask prompt (mask_prompt ignored)"),
        TensorSpec(
            "prev_mask_logits",
            "float32",
            ("O", 1, LOW_RES, LOW_RES),
            "the object's earlier mask logits on this frame, fed back with refining clicks",
        ),
        TensorSpec("use_prev_mask", "bool", ("O",), "True: refine (upstream prev_sam_mask_logits); False: ignored"),
        TensorSpec("multimask", "bool", (1,), "upstream multimask_output"),
    ),
    outputs=(
        TensorSpec("low_res_masks", "float32", ("O", 1, LOW_RES, LOW_RES), "chosen mask logits (-1024: no object)"),
        TensorSpec("iou", "float32", ("O", 1), "predicted IoU of the chosen mask"),
        TensorSpec("low_res_multimasks", "float32", ("O", 3, LOW_RES, LOW_RES), "the three multimask candidates"),
        TensorSpec("all_ious", "float32", ("O", 4), "predicted IoU of the single and the three multimask tokens"),
        TensorSpec("obj_ptr", "float32", ("O", D_MODEL), "object pointer (no-object pointer when absent)"),
        TensorSpec("object_score_logits", "float32", ("O", 1), "> 0: the object is visible"),
    ),
    dims=(_O, _K),
)

TRACKER_MEMORY_ENCODER = GraphSpec(
    name="tracker_memory_encoder",
    doc=(
        "Tracker memory encoder (upstream _encode_new_memory): frame features + mask logits -> spatial memory. "
        "Two upstream paths: after a tracker step (logits upsampled to 1008, then the encoder's 1008 -> 1152) "
        "and the video model's per-frame update (_tracker_update_memories: one resize to 1152, masks that "
        "shrink under pixel-wise non-overlap suppressed over the O objects, object score from mask area)."
    ),
    inputs=(
        TensorSpec("pix_feat", "float32", (1, D_MODEL, 72, 72), "tracker neck top level of the frame"),
        TensorSpec(
            "masks",
            "float32",
            ("O", 1, "S", "S"),
            "mask logits: 288 (mask head), 1008 (consolidated); to 1152 with video_update",
        ),
        TensorSpec("object_score_logits", "float32", ("O", 1), "tracker_mask_head output (unused by video_update)"),
        TensorSpec("binarize", "bool", (1,), "True when the mask came from clicks only (upstream is_mask_from_pts)"),
        TensorSpec("video_update", "bool", (1,), "True: as _tracker_update_memories; False: as after track_step"),
    ),
    outputs=(TensorSpec("maskmem_features", "float32", ("O", TRACKER_MEM_DIM, 72, 72), "spatial memory"),),
    dims=(_O, _S),
)

_SETS = Dim("O", 1, 1, 64)  # prompt sets per click-head run: a batch of automatic-mask grid points
INTERACTIVE_MASK_HEAD = GraphSpec(
    name="interactive_mask_head",
    doc=(
        "Clicks and boxes on one image (upstream predict_inst: SAM3InteractiveImagePredictor._predict): the "
        "tracker's prompt encoder and mask decoder without memory (no-memory embedding added) over the tracker "
        "neck levels of video_vision_encoder, for O prompt sets; raw logits of all four mask tokens (token 0 "
        "replaced by the stability fallback, as upstream's single-mask output), nothing replaced for absent objects."
    ),
    inputs=(
        TensorSpec("tracker_fpn0", "float32", (1, D_MODEL, LOW_RES, LOW_RES), "tracker neck level 0 (no conv_s0 yet)"),
        TensorSpec("tracker_fpn1", "float32", (1, D_MODEL, 144, 144), "tracker neck level 1 (no conv_s1 yet)"),
        TensorSpec("tracker_fpn2", "float32", (1, D_MODEL, 72, 72), "tracker neck level 2"),
        TensorSpec(
            "point_coords", "float32", ("O", "K", 2), "x, y in pixels of the 1008x1008 input (box corners first)"
        ),
        TensorSpec("point_labels", "int32", ("O", "K"), "1 positive, 0 negative, 2/3 box corners"),
        TensorSpec("mask_input", "float32", ("O", 1, LOW_RES, LOW_RES), "low-res logits of a previous call"),
        TensorSpec("use_mask_input", "bool", ("O",), "False: no mask input (mask_input ignored)"),
    ),
    outputs=(
        TensorSpec(
            "low_res_masks",
            "float32",
            ("O", 4, LOW_RES, LOW_RES),
            "mask logits: [0] single-mask output (stability fallback), [1:] the three multimask outputs",
        ),
        TensorSpec("iou_predictions", "float32", ("O", 4), "predicted IoU of the four masks, same order"),
        TensorSpec("object_score_logits", "float32", ("O", 1), "> 0: the head sees an object"),
    ),
    dims=(_SETS, _K),
)

#: The video graphs: the vision graph with the tracker's neck, then the tracker's graphs. The text encoder
#: and decoder of :data:`SPECS` are reused per frame; the interactive head serves clicks on images.
VIDEO_SPECS: dict[str, GraphSpec] = {
    s.name: s
    for s in (
        VIDEO_VISION_ENCODER,
        TRACKER_MEMORY_ATTENTION,
        TRACKER_MASK_HEAD,
        TRACKER_MEMORY_ENCODER,
        INTERACTIVE_MASK_HEAD,
    )
}
#: The graphs exported from the tracker itself (the vision graph comes from the image model).
TRACKER_GRAPHS = ("tracker_memory_attention", "tracker_mask_head", "tracker_memory_encoder", "interactive_mask_head")
#: What clicks run beyond the text graphs: the vision graph that also gives the tracker neck's levels, and the
#: click head (an export made with ``--video``, or engines built from one).
CLICK_GRAPHS = ("video_vision_encoder", INTERACTIVE_MASK_HEAD.name)


#: Every graph a backend can run: the image graphs and the video graphs.
ALL_SPECS: dict[str, GraphSpec] = {**SPECS, **VIDEO_SPECS}


def get_spec(name: str) -> GraphSpec:
    """Spec of graph ``name`` (image or video), with a clear error for an unknown name."""
    try:
        return ALL_SPECS[name]
    except KeyError:
        raise Sam3TrtError(f"unknown graph {name!r}; expected one of {sorted(ALL_SPECS)}") from None


def specs_to_json(specs: Mapping[str, GraphSpec] = SPECS) -> str:
    """Serialise specs for a manifest or an engine folder."""
    return json.dumps({n: s.to_dict() for n, s in specs.items()}, indent=2)


def specs_from_dict(data: Mapping[str, Any]) -> dict[str, GraphSpec]:
    """Inverse of :func:`specs_to_json` (after ``json.loads``)."""
    return {n: GraphSpec.from_dict(d) for n, d in data.items()}
