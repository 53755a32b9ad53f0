"""TensorRT for RTX's runtime settings, chosen when the engines are built and kept in their manifest.

TensorRT for RTX compiles kernels for each input shape it meets (just in time, into the runtime cache). How
and when it does that is set per execution context (``IRuntimeConfig``), not in the plan, so the engine
folder's manifest records the choice (``rtx_runtime``) and the runtime applies it to every context:

* ``kernel_specialization``: ``eager`` (the default here) compiles a shape's kernels the first time the shape
  runs, and that run waits for them; TensorRT's own default, ``lazy``, runs fallback kernels while compiling in
  the background, so early calls are slow by an amount nobody chose and timings mix the two; ``none`` never
  specialises (fallback kernels only).
* ``cuda_graphs``: ``disabled`` (the default here) or ``whole_graph_capture`` (the runtime captures and replays
  a CUDA graph per shape). Off by default: every call binds freshly allocated outputs, and whether the
  runtime's capture pays for itself under changing addresses is measured by ``gpu-check`` on a GPU, not assumed.
* ``shape_buckets``: the prompt, box and text-batch counts the processor pads to (a prompt batch of 3 runs as
  4, the extra row a copy of the last, its outputs dropped), so at most ``len(shape_buckets)`` decoder shapes
  per axis are ever specialised, and :meth:`~sam3_trt.runtime.processor.Sam3Processor.warm_up` can compile
  all of them before the first request. ``[]`` runs exact counts.

Standard TensorRT has none of these (kernels are chosen per profile at build time): its folders carry no
``rtx_runtime`` and run exact counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import Sam3TrtError

KERNEL_SPECIALIZATION = ("eager", "lazy", "none")
CUDA_GRAPHS = ("disabled", "whole_graph_capture")
#: Prompt / box / text-batch counts the decoder and text encoder run at (the profiles' range is 1 to 16).
DEFAULT_BUCKETS = (1, 2, 4, 8, 16)


@dataclasses.dataclass(frozen=True)
class RtxRuntimeSettings:
    """How TensorRT for RTX specialises and launches kernels at run time (see the module docstring).

    Args:
        kernel_specialization: ``"eager"``, ``"lazy"`` or ``"none"``.
        cuda_graphs: ``"disabled"`` or ``"whole_graph_capture"``.
        shape_buckets: Increasing counts the processor pads prompt, box and text batches to (``()``: exact).
    """

    kernel_specialization: str = "eager"
    cuda_graphs: str = "disabled"
    shape_buckets: tuple[int, ...] = DEFAULT_BUCKETS

    def __post_init__(self) -> None:
        if self.kernel_specialization not in KERNEL_SPECIALIZATION:
            raise Sam3TrtError(
                f"kernel specialization {self.kernel_specialization!r} is not one of {', '.join(KERNEL_SPECIALIZATION)}"
            )
        if self.cuda_graphs not in CUDA_GRAPHS:
            raise Sam3TrtError(f"cuda graphs {self.cuda_graphs!r} is not one of {', '.join(CUDA_GRAPHS)}")
        buckets = tuple(self.shape_buckets)
        if any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in buckets) or list(buckets) != sorted(
            set(buckets)
        ):
            raise Sam3TrtError(
                f"shape buckets {list(buckets)} must be increasing positive integers, e.g. {list(DEFAULT_BUCKETS)}"
            )
        object.__setattr__(self, "shape_buckets", buckets)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``rtx_runtime`` entry."""
        return {
            "kernel_specialization": self.kernel_specialization,
            "cuda_graphs": self.cuda_graphs,
            "shape_buckets": list(self.shape_buckets),
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> RtxRuntimeSettings:
        """The settings an engine folder's manifest records (folders built before they were recorded: the
        defaults)."""
        entry = manifest.get("rtx_runtime") or {}
        unknown = sorted(set(entry) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise Sam3TrtError(f"the manifest's rtx_runtime has unknown keys {unknown}; rebuild the engine folder")
        return cls(**{k: tuple(v) if k == "shape_buckets" else v for k, v in entry.items()})

    def apply(self, trt: Any, config: Any) -> None:
        """Set the kernel specialisation and CUDA-graph strategy on ``config`` (an ``IRuntimeConfig``)."""
        strategy = trt.DynamicShapesKernelSpecializationStrategy
        config.dynamic_shapes_kernel_specialization_strategy = getattr(strategy, self.kernel_specialization.upper())
        config.cuda_graph_strategy = getattr(trt.CudaGraphStrategy, self.cuda_graphs.upper())


def parse_buckets(text: str, name: str) -> tuple[int, ...]:
    """``"1,2,4,8,16"`` -> ``(1, 2, 4, 8, 16)``; ``"none"`` -> ``()``.

    Args:
        text: What the user typed.
        name: The option, for the message.
    """
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise Sam3TrtError(
            f"{name} {text!r}: give increasing counts separated by commas (e.g. 1,2,4,8,16) or 'none'"
        ) from None


def bucket(count: int, buckets: tuple[int, ...], most: int) -> int:
    """The size a batch of ``count`` runs at: the smallest bucket that holds it, at most ``most`` (a profile's
    maximum); ``count`` itself without buckets or past the largest.

    Args:
        count: Rows the caller has.
        buckets: Increasing sizes (``()``: none).
        most: The largest size the graph accepts.
    """
    for size in buckets:
        if size >= count:
            return size if size <= most else count
    return count
