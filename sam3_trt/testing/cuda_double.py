"""A double of ``cuda.bindings.runtime`` (cuda-python) over :class:`~.fake_gpu.FakeGpu`.

Every function the double models is a ``mock.create_autospec`` of the real function (argument names and
count checked) returning what the real one returns: a ``cudaError_t`` first, then real cuda-python
types (``cudaStream_t``, ``cudaEvent_t``, ``cudaDeviceProp``). Enums, types and constants are the real
module's. A real function the double does not model raises :class:`~.apicheck.NotModelled`; a name the
real module lacks raises ``AttributeError``. :meth:`CudaRuntimeDouble.fail` makes a call return an
error status, to show that the caller checks it.

Copies between the device and numpy (pageable) memory take CUDA's worst case: they wait for the stream's
queued work and complete before returning (each counted in ``pageable_stalls``). Copies from or to
page-locked memory (``cudaMallocHost``) and device-to-device copies are queued on the stream, their host bytes
read when the stream gets there: a pinned buffer reused too early corrupts the copy, as on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .apicheck import function_double
from .fake_gpu import FakeGpu


class CudaRuntimeDouble:
    """Module-like double of ``cuda.bindings.runtime``.

    Args:
        gpu: The host-memory GPU it acts on.
    """

    def __init__(self, gpu: FakeGpu) -> None:
        from cuda.bindings import runtime as real

        self._real = real
        self.gpu = gpu
        self._failures: dict[str, Any] = {}
        #: names of the functions called, in order (tests assert protocols on it)
        self.calls: list[str] = []
        #: bytes copied by ``cudaMemcpyAsync``, by direction (``host_to_device``, ``device_to_host``, ...)
        self.copied: dict[str, int] = {"host_to_device": 0, "device_to_host": 0, "device_to_device": 0}
        #: ``cudaMemcpyAsync`` calls, by direction
        self.copy_calls: dict[str, int] = dict.fromkeys(self.copied, 0)
        #: of those bytes, the ones copied from or to page-locked host memory (``host_to_device_pinned``, ...)
        self.copied |= {"host_to_device_pinned": 0, "device_to_host_pinned": 0}
        #: copies between the device and pageable host memory: each waited for the stream's queued work
        self.pageable_stalls = 0
        #: page-locked host blocks (``cudaMallocHost``): address -> buffer
        self.pinned: dict[int, np.ndarray] = {}
        impls = {name[len("_impl_") :]: getattr(self, name) for name in dir(type(self)) if name.startswith("_impl_")}
        self._functions = {name: self._wrap(name, impl) for name, impl in impls.items()}

    def __getattr__(self, name: str) -> Any:
        functions = self.__dict__.get("_functions", {})
        if name in functions:
            return functions[name]
        value = getattr(self._real, name)  # AttributeError for names the real module lacks
        if callable(value) and name.startswith("cuda") and not isinstance(value, type):
            return function_double(value, None, f"cuda.bindings.runtime.{name}")
        return value

    def fail(self, name: str, error: str = "cudaErrorMemoryAllocation") -> None:
        """Make the next call of ``name`` return ``error`` (a ``cudaError_t`` member name)."""
        self._failures[name] = getattr(self._real.cudaError_t, error)

    def _wrap(self, name: str, impl: Callable[..., Any]) -> Any:
        real_fn = getattr(self._real, name)

        def run(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in self._failures:
                err = self._failures.pop(name)
                n_values = {
                    "cudaGetDeviceCount": 1,
                    "cudaMallocAsync": 1,
                    "cudaMallocFromPoolAsync": 1,
                    "cudaMalloc": 1,
                    "cudaMemPoolCreate": 1,
                    "cudaDeviceGetDefaultMemPool": 1,
                }.get(name, 0)
                return (err, *([None] * n_values))
            return impl(*args, **kwargs)

        return function_double(real_fn, run, f"cuda.bindings.runtime.{name}")

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def _ok(self) -> Any:
        return self._real.cudaError_t.cudaSuccess

    def _err(self, name: str) -> Any:
        return getattr(self._real.cudaError_t, name)

    # -- devices ---------------------------------------------------------------------------------
    def _impl_cudaGetDeviceCount(self) -> tuple:
        return (self._ok, len(self.gpu.names))

    def _impl_cudaDriverGetVersion(self) -> tuple:
        return (self._ok, 13000)

    def _impl_cudaRuntimeGetVersion(self) -> tuple:
        return self._real.cudaRuntimeGetVersion()  # the binding's own version needs no driver

    def _impl_cudaGetDeviceProperties(self, device: int) -> tuple:
        if not 0 <= device < len(self.gpu.names):
            return (self._err("cudaErrorInvalidDevice"), None)
        props = self._real.cudaDeviceProp()
        props.name = self.gpu.names[device].encode().ljust(256, b"\x00")
        props.major, props.minor = self.gpu.compute_capabilities[device]
        props.totalGlobalMem = self.gpu.total_bytes
        return (self._ok, props)

    def _impl_cudaSetDevice(self, device: int) -> tuple:
        return (self._ok if self.gpu.set_device(int(device)) else self._err("cudaErrorInvalidDevice"),)

    def _impl_cudaGetDevice(self) -> tuple:
        return (self._ok, self.gpu.device())

    def _impl_cudaGetErrorName(self, error: Any) -> tuple:
        return self._real.cudaGetErrorName(error)

    def _impl_cudaGetErrorString(self, error: Any) -> tuple:
        return self._real.cudaGetErrorString(error)

    def _impl_cudaMemGetInfo(self) -> tuple:
        return (self._ok, self.gpu.total_bytes - self.gpu.live_bytes(), self.gpu.total_bytes)

    def _impl_cudaDeviceSynchronize(self) -> tuple:
        self.gpu.sync_all()
        return (self._ok,)

    # -- streams and events ------------------------------------------------------------------------
    def _impl_cudaStreamCreate(self) -> tuple:
        return (self._ok, self._real.cudaStream_t(self.gpu.new_stream()))

    def _impl_cudaStreamCreateWithFlags(self, flags: int) -> tuple:
        return (self._ok, self._real.cudaStream_t(self.gpu.new_stream()))

    def _impl_cudaStreamDestroy(self, stream: Any) -> tuple:
        self.gpu.destroy_stream(int(stream))
        return (self._ok,)

    def _impl_cudaStreamSynchronize(self, stream: Any) -> tuple:
        self.gpu.sync_stream(int(stream))
        return (self._ok,)

    def _impl_cudaStreamWaitEvent(self, stream: Any, event: Any, flags: int) -> tuple:
        self.gpu.wait(int(stream), int(event))
        return (self._ok,)

    def _impl_cudaEventCreate(self) -> tuple:
        return (self._ok, self._real.cudaEvent_t(self.gpu.new_event()))

    def _impl_cudaEventCreateWithFlags(self, flags: int) -> tuple:
        return (self._ok, self._real.cudaEvent_t(self.gpu.new_event()))

    def _impl_cudaEventRecord(self, event: Any, stream: Any) -> tuple:
        self.gpu.record(int(event), int(stream))
        return (self._ok,)

    def _impl_cudaEventQuery(self, event: Any) -> tuple:
        ev = self.gpu.event(int(event))
        if ev.stream is not None and self.gpu.stream(ev.stream).done < ev.seq:
            return (self._err("cudaErrorNotReady"),)
        return (self._ok,)

    def _impl_cudaEventSynchronize(self, event: Any) -> tuple:
        self.gpu.sync_event(int(event))
        return (self._ok,)

    def _impl_cudaEventElapsedTime(self, start: Any, end: Any) -> tuple:
        a, b = self.gpu.event(int(start)), self.gpu.event(int(end))
        if a.time_s is None or b.time_s is None:
            return (self._err("cudaErrorNotReady"), None)
        return (self._ok, (b.time_s - a.time_s) * 1000.0)

    def _impl_cudaEventDestroy(self, event: Any) -> tuple:
        self.gpu.events.pop(int(event), None)
        return (self._ok,)

    # -- memory ----------------------------------------------------------------------------------
    def _impl_cudaMallocHost(self, size: int) -> tuple:
        buf = np.empty(max(int(size), 1), np.uint8)
        self.pinned[buf.ctypes.data] = buf
        return (self._ok, buf.ctypes.data)

    def _impl_cudaFreeHost(self, ptr: Any) -> tuple:
        if self.pinned.pop(int(ptr), None) is None:
            return (self._err("cudaErrorInvalidValue"),)
        return (self._ok,)

    def _pinned_owner(self, ptr: int, nbytes: int) -> bool:
        """Whether ``[ptr, ptr+nbytes)`` lies in a page-locked block (raises on an overrun of one)."""
        for base, buf in self.pinned.items():
            if base <= ptr < base + buf.nbytes:
                if ptr + nbytes > base + buf.nbytes:
                    raise AssertionError(f"copy of {nbytes} bytes at {ptr:#x} overruns its pinned block")
                return True
        return False

    def _impl_cudaMalloc(self, size: int) -> tuple:
        return (self._ok, self.gpu.malloc(size))

    def _impl_cudaFree(self, devPtr: int) -> tuple:
        self.gpu.sync_all()  # cudaFree synchronises the device
        return (self._ok if self.gpu.free(int(devPtr)) else self._err("cudaErrorInvalidValue"),)

    def _impl_cudaMallocAsync(self, size: int, hStream: Any) -> tuple:
        self.gpu.stream(int(hStream))
        return (self._ok, self.gpu.malloc(size, self.gpu.default_pool(self.gpu.device())))

    def _impl_cudaMallocFromPoolAsync(self, size: int, memPool: Any, stream: Any) -> tuple:
        self.gpu.stream(int(stream))
        return (self._ok, self.gpu.malloc(size, self.gpu.pool(int(memPool))))

    def _impl_cudaDeviceGetDefaultMemPool(self, device: int) -> tuple:
        if not 0 <= device < len(self.gpu.names):
            return (self._err("cudaErrorInvalidDevice"), None)
        return (self._ok, self._real.cudaMemPool_t(self.gpu.default_pool(device).handle))

    def _impl_cudaMemPoolCreate(self, poolProps: Any) -> tuple:
        kinds = self._real
        if (
            poolProps.allocType != kinds.cudaMemAllocationType.cudaMemAllocationTypePinned
            or poolProps.location.type != kinds.cudaMemLocationType.cudaMemLocationTypeDevice
            or not 0 <= poolProps.location.id < len(self.gpu.names)
        ):
            return (self._err("cudaErrorInvalidValue"), None)
        return (self._ok, self._real.cudaMemPool_t(self.gpu.create_pool(poolProps.location.id).handle))

    def _impl_cudaMemPoolSetAttribute(self, memPool: Any, attr: Any, value: Any) -> tuple:
        if attr != self._real.cudaMemPoolAttr.cudaMemPoolAttrReleaseThreshold:
            return (self._err("cudaErrorNotSupported"),)
        from cuda.bindings import driver

        if not isinstance(value, driver.cuuint64_t):  # the binding takes this attribute's value as cuuint64_t
            return (self._err("cudaErrorInvalidValue"),)
        self.gpu.pool(int(memPool)).release_threshold = int(value)
        return (self._ok,)

    def _impl_cudaMemPoolDestroy(self, memPool: Any) -> tuple:
        pool = self.gpu.pool(int(memPool))
        with self.gpu.lock:
            self.gpu.pools = {k: p for k, p in self.gpu.pools.items() if p is not pool}
        return (self._ok,)

    def _impl_cudaFreeAsync(self, devPtr: int, hStream: Any) -> tuple:
        ptr = int(devPtr)
        if ptr not in self.gpu.allocations:
            return (self._err("cudaErrorInvalidValue"),)
        # the same stream's later allocations may reuse the block now (ordered after the free); its memory
        # stays readable by work queued before the free, and goes when the stream gets to the free
        self.gpu.release_to_pool(ptr)
        self.gpu.stream(int(hStream)).enqueue(f"free {ptr:#x}", lambda: self.gpu.free(ptr))
        return (self._ok,)

    def _impl_cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple:
        kinds = self._real.cudaMemcpyKind
        st = self.gpu.stream(int(stream))
        direction = {
            kinds.cudaMemcpyHostToDevice: "host_to_device",
            kinds.cudaMemcpyDeviceToHost: "device_to_host",
            kinds.cudaMemcpyDeviceToDevice: "device_to_device",
        }.get(kind)
        if direction is not None:
            self.copied[direction] += int(count)
            self.copy_calls[direction] += 1
        if kind in (kinds.cudaMemcpyHostToDevice, kinds.cudaMemcpyDeviceToHost):
            device_ptr, host_ptr = (
                (int(dst), int(src)) if kind == kinds.cudaMemcpyHostToDevice else (int(src), int(dst))
            )
            if self.gpu.owner(device_ptr, int(count)) is None:
                return (self._err("cudaErrorInvalidValue"),)
            st.enqueue(f"memcpy {count} bytes", lambda: self.gpu.copy(int(dst), int(src), int(count)))
            if self._pinned_owner(host_ptr, int(count)):
                # page-locked host memory: queued like a kernel; the host bytes are read (or written) when the
                # stream gets there, so a host buffer reused before then corrupts the copy, as on a GPU
                self.copied[f"{direction}_pinned"] += int(count)
                return (self._ok,)
            # pageable host memory: CUDA may make the copy synchronous; modelled as waiting for the stream's
            # queued work (every engine run before it), counted as a stall
            self.pageable_stalls += 1
            st.run()
            return (self._ok,)
        if kind == kinds.cudaMemcpyDeviceToDevice:
            st.enqueue(f"memcpy d2d {count} bytes", lambda: self.gpu.copy(int(dst), int(src), int(count)))
            return (self._ok,)
        return (self._err("cudaErrorInvalidMemcpyDirection"),)
