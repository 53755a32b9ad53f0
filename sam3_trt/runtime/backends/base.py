"""The interface every backend implements: run a graph by name with named inputs, get named outputs.

Every backend validates feeds against :mod:`sam3_trt.specs` (names, dtypes, dynamic ranges) before running,
serialises calls with a lock (one processor may be shared by threads), and frees its resources on
``close()`` or when used as a context manager.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import Sam3TrtError
from ...specs import ALL_SPECS, SPECS, get_spec


class Backend:
    """Base class: spec validation, call counting, locking, context management."""

    name = "base"
    #: True when a run's outputs live in buffers the next run overwrites (callers copy what they keep).
    #: None of this package's backends do; the flag is for backends written elsewhere.
    reuses_outputs = False
    #: Counts the processor pads prompt, box and text batches to, so few shapes ever run (TensorRT for RTX
    #: compiles kernels per shape: :mod:`sam3_trt.engines.rtx_runtime`); ``()``: exact counts.
    shape_buckets: tuple[int, ...] = ()
    #: Torch device string the outputs live on (``"cpu"`` for host arrays).
    result_device = "cpu"
    #: Graphs this backend runs: the image graphs; ONNX Runtime also runs the video graphs, TensorRT the
    #: graphs its engine folder holds.
    graphs: tuple[str, ...] = tuple(SPECS)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: graph name -> number of runs (tests use this to prove caching)
        self.calls: dict[str, int] = dict.fromkeys(ALL_SPECS, 0)
        #: graph name -> wall seconds of its latest run (``sam3-trt bench`` reads this per stage)
        self.last_seconds: dict[str, float] = {}
        self._closed = False

    def run(self, graph: str, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``graph`` on ``feeds`` (``{input name: array}``) and return ``{output name: array}``."""
        spec = get_spec(graph)
        if graph not in self.graphs:
            raise Sam3TrtError(
                f"the {self.name} backend does not run {graph!r} (it runs {', '.join(self.graphs)}); the video "
                "graphs run on ONNX Runtime over an export made with --video, or on TensorRT over engines built from one"
            )
        sizes = spec.infer_sizes(feeds)
        with self._lock:
            if self._closed:
                raise Sam3TrtError(f"the {self.name} backend is closed; create a new processor")
            self.calls[graph] += 1
            start = time.perf_counter()
            out = self._run(graph, feeds, sizes)
            self.last_seconds[graph] = time.perf_counter() - start
            return out

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        raise NotImplementedError

    def load_all(self, graphs: Sequence[str] | None = None) -> None:
        """Create now what the backend would create on first use, so the first run pays only for running.

        Args:
            graphs: The graphs to prepare (default: the three image graphs).
        """

    def synchronize(self) -> None:
        """Wait until every run queued so far has finished (GPU backends queue work; the others run it at once)."""

    def close(self) -> None:
        """Free sessions, engines and device memory (waits for a run in progress; later runs raise)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def _release(self) -> None:
        """Free what the backend holds (called once, under the lock, by :meth:`close`)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
