"""The interface every device-memory provider implements for the TensorRT runner.

One run of an engine, whatever the provider (:mod:`.torch` or :mod:`.cuda_python`)::

    with memory.activate():                # this backend's device is current (per thread in CUDA)
        memory.wait_for_caller()            # our stream starts after the caller's queued work
        x = memory.to_device(array, dtype)  # input on the device (bound as is when already there)
        y = memory.empty(shape, dtype)      # a fresh output, owned by whoever keeps it
        memory.start_timer(); execute_async_v3(memory.stream_handle); timer = memory.stop_timer()
        memory.hand_over([x])               # the caller's stream (or host) waits for ours

Outputs are **fresh per run**, never buffers the next run overwrites: a result held by one thread
cannot be changed by another thread's run, and nothing grows with the largest shape seen. Allocation is
cheap because both providers allocate stream-ordered (torch's caching allocator, ``cudaMallocFromPoolAsync`` from an own pool).

Every CUDA call's status is checked and raised with the call's name and the CUDA error name, as
TensorRT's ``common_runtime.py`` does.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ...errors import Sam3TrtError

#: Provider names accepted by ``Sam3Processor(device_memory=...)``. pycuda is not one: cuda-python is
#: NVIDIA's maintained binding (TensorRT's samples moved to it), and pycuda cannot be built or tested
#: on a machine without a CUDA driver, so a pycuda layer would be code CI never runs.
PROVIDERS = ("torch", "cuda-python")


#: Alignment TensorRT requires of every tensor address it is given (``IExecutionContext.set_tensor_address``).
#: Fresh allocations have it (``cudaMalloc*`` and torch's caching allocator align to at least 256 bytes); a
#: view into a batch row need not (``text_mask[1]`` of a ``[P, 32]`` bool output starts 32 bytes in).
TENSOR_ALIGNMENT = 256


class CudaError(Sam3TrtError):
    """A CUDA call failed; the message names the call and CUDA's error name."""


class Timer(abc.ABC):
    """Engine time of one run, between two events on the backend's stream (read lazily: no host sync)."""

    @abc.abstractmethod
    def elapsed_ms(self) -> float:
        """Milliseconds between the two events (waits for the second one)."""


class DeviceMemory(abc.ABC):
    """Device memory, one stream and events on one GPU, for the TensorRT runner.

    Args:
        device_index: CUDA device the backend runs on.
    """

    #: Provider name (one of :data:`PROVIDERS`).
    name = "base"
    #: Torch device string results live on (``"cuda:0"``), or ``"cpu"`` when results are host arrays.
    result_device = "cpu"

    def __init__(self, device_index: int) -> None:
        self.device_index = device_index
        self.closed = False

    @property
    @abc.abstractmethod
    def stream_handle(self) -> int:
        """The backend's own CUDA stream (``cudaStream_t`` as an int), passed to ``execute_async_v3``."""

    @abc.abstractmethod
    def activate(self) -> contextlib.AbstractContextManager[None]:
        """Make this backend's device current for the calling thread while the block runs."""

    @abc.abstractmethod
    def wait_for_caller(self) -> None:
        """Order the backend's stream after work the caller has queued (inputs it produced, reads of results)."""

    @abc.abstractmethod
    def to_device(self, value: Any, dtype: str) -> Any:
        """``value`` (host array, or a device array of this provider) as a contiguous device array of ``dtype``."""

    @abc.abstractmethod
    def empty(self, shape: Sequence[int], dtype: str) -> Any:
        """A new uninitialised device array (an output of one run)."""

    @abc.abstractmethod
    def pointer(self, array: Any) -> int:
        """Device address of a device array from :meth:`to_device` or :meth:`empty`."""

    @abc.abstractmethod
    def start_timer(self) -> None:
        """Record the start event of a run on the backend's stream."""

    @abc.abstractmethod
    def stop_timer(self) -> Timer:
        """Record the end event of a run and return the pair as a :class:`Timer`."""

    @abc.abstractmethod
    def hand_over(self, inputs: Sequence[Any]) -> None:
        """Make the run's outputs safe to use and its inputs safe to release (event or host sync)."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait on the host until the backend's stream is idle."""

    def memory_info(self) -> dict[str, float]:
        """``{"free_mb", "total_mb"}`` of the device (``cudaMemGetInfo``)."""
        return {}

    def close(self) -> None:
        """Wait for queued work, then free the stream, events and memory this provider holds."""
        self.closed = True


def numpy_dtype(dtype: str) -> np.dtype:
    """numpy dtype of a spec dtype name (``"float32"``, ``"int64"``, ``"bool"``)."""
    return np.dtype(dtype)


@contextlib.contextmanager
def no_context() -> Iterator[None]:
    """For providers whose calls carry the device themselves."""
    yield


def open_device_memory(name: str = "auto", device_index: int = 0) -> DeviceMemory:
    """Open a device-memory provider.

    Args:
        name: ``"auto"`` (torch when it is installed with CUDA, else cuda-python), ``"torch"`` or
            ``"cuda-python"``.
        device_index: CUDA device.

    Raises:
        Sam3TrtError: Unknown name, provider not installed (naming the package to install), or no GPU.
    """
    if name == "pycuda":
        raise Sam3TrtError(
            "device_memory='pycuda' is not supported; use 'cuda-python' (NVIDIA's maintained CUDA binding: "
            "pip install 'sam3-trt[rtx]') or 'torch'"
        )
    if name not in ("auto", *PROVIDERS):
        raise Sam3TrtError(f"device_memory={name!r}: use 'auto', {', '.join(repr(p) for p in PROVIDERS)}")
    if name == "auto":
        name = _auto_provider()
    if name == "torch":
        from .torch import TorchMemory

        return TorchMemory(device_index)
    from .cuda_python import CudaPythonMemory

    return CudaPythonMemory(device_index)


def _auto_provider() -> str:
    from . import torch as torch_memory

    if torch_memory.torch_cuda_available():
        return "torch"
    try:
        from ... import device

        device.cudart()
        return "cuda-python"
    except ImportError:
        pass
    raise Sam3TrtError(
        "the TensorRT backend needs device memory: pip install 'sam3-trt[rtx]' (brings cuda-python; "
        "'sam3-trt[gpu]' for standard TensorRT), or install torch with CUDA"
    )
