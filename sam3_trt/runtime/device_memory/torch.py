"""Device memory as torch CUDA tensors: the drop-in case (results stay torch tensors on the GPU).

Everything but the engine runs on the caller's current stream, as any torch op would: input copies,
output allocation (torch's caching allocator), and later every use the caller makes of the results. The
engine runs on the backend's own stream (TensorRT synchronises the device on the default stream),
bracketed by two events:

* before: an event recorded on the caller's stream, which our stream waits for (the inputs it produced
  and the reads of earlier results are done before the engine reads and writes);
* after: an event recorded on our stream, which the caller's stream waits for (results are complete
  before anything the caller queues next reads them). No host synchronisation is needed.

Because all memory is allocated on the caller's stream, which waits for the engine, the caching
allocator never hands a block to other work while the engine may still use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ...errors import Sam3TrtError
from .base import TENSOR_ALIGNMENT, DeviceMemory, Timer


def torch_device(index: int) -> Any:
    """The torch device tensors live on (the CI doubles replace this function with the CPU)."""
    import torch

    return torch.device("cuda", index)


def cuda_api() -> Any:
    """``torch.cuda`` (the CI doubles replace this function with a host-memory double)."""
    import torch

    return torch.cuda


def torch_cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (never raises)."""
    try:
        return bool(cuda_api().is_available())
    except ImportError:
        return False


class _EventTimer(Timer):
    def __init__(self, start: Any, end: Any) -> None:
        self._start, self._end = start, end
        self._ms: float | None = None

    def elapsed_ms(self) -> float:
        if self._ms is None:
            self._end.synchronize()
            self._ms = float(self._start.elapsed_time(self._end))
        return self._ms


class TorchMemory(DeviceMemory):
    """torch CUDA device memory (see the module docstring).

    Args:
        device_index: CUDA device.
    """

    name = "torch"

    def __init__(self, device_index: int) -> None:
        super().__init__(device_index)
        try:
            import torch
        except ImportError:
            raise Sam3TrtError(
                "device_memory='torch' needs torch with CUDA; without torch use device_memory='cuda-python' "
                "(pip install 'sam3-trt[rtx]')"
            ) from None
        self._torch = torch
        self._cuda = cuda_api()
        if not self._cuda.is_available():
            raise Sam3TrtError(
                "device_memory='torch' needs torch built with CUDA (torch.cuda.is_available() is False); "
                "use device_memory='cuda-python' (pip install 'sam3-trt[rtx]')"
            )
        count = self._cuda.device_count()
        if not 0 <= device_index < count:
            raise Sam3TrtError(f"device_index={device_index}, but torch sees {count} CUDA device(s)")
        self.device = torch_device(device_index)
        self.result_device = str(self.device)
        with self.activate():
            self.stream = self._cuda.Stream(device=self.device)
        self._timer_start: Any = None

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        with self._cuda.device(self.device_index):
            yield

    def _caller_stream(self) -> Any:
        return self._cuda.current_stream(self.device)

    def wait_for_caller(self) -> None:
        ready = self._cuda.Event()
        ready.record(self._caller_stream())
        self.stream.wait_event(ready)

    def to_device(self, value: Any, dtype: str) -> Any:
        torch = self._torch
        want = getattr(torch, dtype)
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        # a copy, when needed, runs on the caller's stream, before wait_for_caller's event
        out = tensor.to(device=self.device, dtype=want).contiguous()
        if out.storage_offset() and out.data_ptr() % TENSOR_ALIGNMENT:  # a row view: TensorRT needs alignment
            out = out.clone()
        return out

    def empty(self, shape: Sequence[int], dtype: str) -> Any:
        return self._torch.empty(tuple(shape), dtype=getattr(self._torch, dtype), device=self.device)

    def pointer(self, array: Any) -> int:
        return int(array.data_ptr())

    def start_timer(self) -> None:
        self._timer_start = self._cuda.Event(enable_timing=True)
        self._timer_start.record(self.stream)

    def stop_timer(self) -> Timer:
        end = self._cuda.Event(enable_timing=True)
        end.record(self.stream)
        return _EventTimer(self._timer_start, end)

    def hand_over(self, inputs: Sequence[Any]) -> None:
        done = self._cuda.Event()
        done.record(self.stream)
        self._caller_stream().wait_event(done)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def memory_info(self) -> dict[str, float]:
        free, total = self._cuda.mem_get_info(self.device)
        return {
            "free_mb": round(free / 2**20, 1),
            "total_mb": round(total / 2**20, 1),
            "torch_allocated_mb": round(self._cuda.memory_allocated(self.device) / 2**20, 1),
            "torch_peak_allocated_mb": round(self._cuda.max_memory_allocated(self.device) / 2**20, 1),
        }

    def close(self) -> None:
        if self.closed:
            return
        self.stream.synchronize()
        self.stream = None
        # return the cached blocks our outputs and copies used (results a caller still holds stay valid)
        self._cuda.empty_cache()
        super().close()
