"""A double of the ``torch.cuda`` API the torch device-memory layer uses, over :class:`~.fake_gpu.FakeGpu`.

Tensors are real torch CPU tensors (the doubles make the memory layer's ``torch_device`` the CPU); streams and events are autospecs of ``torch.cuda.Stream`` and ``torch.cuda.Event`` (method
names and arguments checked against torch's own), acting on the fake GPU's queues. The caller's stream
(``current_stream``) is the fake GPU's immediate stream 0: torch's CPU ops run at once, so engine work the
caller's stream waits for runs at the wait, and engine work nobody waits for has not run yet when the
caller reads the outputs.
"""

from __future__ import annotations

import contextlib
from typing import Any
from unittest import mock

from .apicheck import function_double
from .fake_gpu import FakeGpu


class TorchCudaDouble:
    """Namespace double of ``torch.cuda``.

    Args:
        gpu: The host-memory GPU.
        available: What ``is_available()`` answers (``False`` to model torch without CUDA).
    """

    def __init__(self, gpu: FakeGpu, available: bool = True) -> None:
        import torch

        self._torch = torch
        # the real classes, captured now: the double may later stand in for torch.cuda itself
        self._stream_cls, self._event_cls = torch.cuda.Stream, torch.cuda.Event
        self.gpu = gpu
        self.available = available
        #: how many times empty_cache ran (close() must return cached blocks)
        self.empty_cache_calls = 0
        real = torch.cuda
        for name in (
            "is_available",
            "device_count",
            "get_device_name",
            "get_device_capability",
            "current_stream",
            "empty_cache",
            "mem_get_info",
            "memory_allocated",
            "max_memory_allocated",
            "synchronize",
        ):
            setattr(self, name, function_double(getattr(real, name), getattr(self, f"_{name}"), f"torch.cuda.{name}"))
        self.Stream = function_double(real.Stream, self._new_stream, "torch.cuda.Stream")
        self.Event = function_double(real.Event, self._new_event, "torch.cuda.Event")
        self.device = function_double(real.device, lambda device: self._device_context(device), "torch.cuda.device")
        self._caller = self._stream_double(0)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the torch.cuda double does not model torch.cuda.{name}; extend sam3_trt.testing")

    # -- functions ------------------------------------------------------------------------------
    def _is_available(self) -> bool:
        return self.available

    def _device_count(self) -> int:
        return len(self.gpu.names) if self.available else 0

    def _get_device_name(self, device: Any = None) -> str:
        return self.gpu.names[self._index(device)]

    def _get_device_capability(self, device: Any = None) -> tuple[int, int]:
        return self.gpu.compute_capabilities[self._index(device)]

    def _current_stream(self, device: Any = None) -> Any:
        return self._caller

    def _empty_cache(self) -> None:
        self.empty_cache_calls += 1

    def _mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return (self.gpu.total_bytes - self.gpu.live_bytes(), self.gpu.total_bytes)

    def _memory_allocated(self, device: Any = None) -> int:
        return 0

    def _max_memory_allocated(self, device: Any = None) -> int:
        return 0

    def _synchronize(self, device: Any = None) -> None:
        self.gpu.sync_all()

    def _index(self, device: Any) -> int:
        if device is None:
            return self.gpu.device()
        if isinstance(device, int):
            return device
        index = getattr(device, "index", None)
        return 0 if index is None else int(index)

    @contextlib.contextmanager
    def _device_context(self, device: Any) -> Any:
        index = self._index(device)
        if not self.gpu.set_device(index):
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        yield

    # -- streams and events ------------------------------------------------------------------------
    def _new_stream(self, device: Any = None, priority: int = 0, **kwargs: Any) -> Any:
        return self._stream_double(self.gpu.new_stream())

    def _stream_double(self, handle: int) -> Any:
        stream = mock.create_autospec(self._stream_cls, instance=True, spec_set=True)
        stream.cuda_stream = handle
        stream.wait_event.side_effect = lambda event: self.gpu.wait(handle, event._handle)
        stream.wait_stream.side_effect = lambda other: self._wait_stream(handle, other)
        stream.synchronize.side_effect = lambda: self.gpu.sync_stream(handle)
        stream.query.side_effect = lambda: self.gpu.stream(handle).done == self.gpu.stream(handle).queued

        def record_event(event: Any = None) -> Any:
            event = event or self._new_event()
            event.record(stream)
            return event

        stream.record_event.side_effect = record_event
        return stream

    def _wait_stream(self, handle: int, other: Any) -> None:
        event = self._new_event()
        event.record(other)
        self.gpu.wait(handle, event._handle)

    def _new_event(
        self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False, external: bool = False
    ) -> Any:
        handle = self.gpu.new_event()
        event = mock.create_autospec(self._event_cls, instance=True)
        event._handle = handle
        event._timing = enable_timing

        def record(stream: Any = None) -> None:
            self.gpu.record(handle, int((stream or self._caller).cuda_stream))

        def elapsed_time(end_event: Any) -> float:
            if not (event._timing and end_event._timing):
                raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
            a, b = self.gpu.event(handle), self.gpu.event(end_event._handle)
            if a.time_s is None or b.time_s is None:
                raise RuntimeError("CUDA error: device not ready (elapsed_time before both events completed)")
            return (b.time_s - a.time_s) * 1000.0

        event.record.side_effect = record
        event.synchronize.side_effect = lambda: self.gpu.sync_event(handle)
        event.elapsed_time.side_effect = elapsed_time
        event.wait.side_effect = lambda stream=None: self.gpu.wait(int((stream or self._caller).cuda_stream), handle)
        event.query.side_effect = lambda: self.gpu.event(handle).time_s is not None
        return event
