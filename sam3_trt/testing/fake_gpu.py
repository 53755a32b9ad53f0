"""A GPU made of host memory and queues: what the CUDA and torch.cuda doubles act on.

Streams are modelled as CUDA defines them, not as "run everything at once": work queued on a stream
runs when something waits for it (a stream or event synchronisation, a host copy from pageable memory,
or another stream that waits on one of its events and is itself run). So a missing event, a missing
wait or a read before synchronisation shows up as wrong data in a test, the way it would on a GPU.

The caller's stream of the torch double is *immediate* (torch's CPU ops run at once), so work that the
caller's stream waits for runs at the wait. Device memory from ``cudaMalloc*`` is numpy host memory, and
every address an engine reads or writes is checked against the live allocations (use after free and
overruns fail) when it comes from them.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass
class FakeEvent:
    handle: int
    stream: int | None = None
    seq: int = 0
    time_s: float | None = None


#: Alignment of device allocations (CUDA guarantees at least 256 bytes).
ALIGNMENT = 256
#: Granularity in which a pool reserves memory from the driver (CUDA maps pool memory in 2 MiB pages).
POOL_GRANULARITY = 2 * 2**20


@dataclasses.dataclass
class FakePool:
    """A stream-ordered memory pool, counted in bytes: allocations are carved out of the memory it has
    reserved from the driver (no fragmentation modelled); a synchronisation that finds more than
    ``release_threshold`` bytes reserved but unused gives them back to the driver (CUDA's rule)."""

    handle: int
    device: int
    release_threshold: int = 0
    reserved: int = 0
    used: int = 0

    def take(self, nbytes: int) -> bool:
        """Carve ``nbytes`` from the reserve (True), or grow the reserve from the driver first (False)."""
        self.used += nbytes
        if self.used <= self.reserved:
            return True
        self.reserved = -(-self.used // POOL_GRANULARITY) * POOL_GRANULARITY
        return False

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes

    def trim(self) -> bool:
        """Release unused reserve above the threshold; True when anything went back to the driver."""
        keep = -(-self.used // POOL_GRANULARITY) * POOL_GRANULARITY
        if self.reserved - self.used > self.release_threshold and self.reserved > keep:
            self.reserved = keep
            return True
        return False


class FakeStream:
    """Ordered work; ``immediate`` streams run work as it is queued (the torch caller's stream)."""

    def __init__(self, gpu: FakeGpu, handle: int, immediate: bool = False) -> None:
        self.gpu = gpu
        self.handle = handle
        self.immediate = immediate
        self.queued = 0  # work items ever queued
        self.done = 0  # work items run
        self.pending: list[tuple[str, Callable[[], None]]] = []
        self.destroyed = False

    def enqueue(self, label: str, fn: Callable[[], None]) -> None:
        with self.gpu.lock:
            if self.destroyed:
                raise AssertionError(f"work {label!r} queued on destroyed stream {self.handle}")
            self.gpu.log.append((label, self.handle))
            self.queued += 1
            self.pending.append((label, fn))
            if self.immediate:
                self.run()

    def run(self, upto: int | None = None) -> None:
        """Run queued work up to item ``upto`` (all when ``None``)."""
        with self.gpu.lock:
            target = self.queued if upto is None else upto
            while self.done < target:
                _label, fn = self.pending.pop(0)
                self.done += 1
                fn()


class FakeGpu:
    """One or more devices of host memory.

    Args:
        names: Device names (what ``cudaGetDeviceProperties`` reports).
        compute_capabilities: ``(major, minor)`` per device.
        total_mb: Reported device memory.
    """

    def __init__(
        self,
        names: tuple[str, ...] = ("NVIDIA GeForce RTX 5090 (sam3-trt test double)",),
        compute_capabilities: tuple[tuple[int, int], ...] = ((12, 0),),
        total_mb: int = 32_768,
    ) -> None:
        self.names = names
        self.compute_capabilities = compute_capabilities
        self.total_bytes = total_mb * 2**20
        self.lock = threading.RLock()
        self._handles = itertools.count(0x1000)
        self.allocations: dict[int, np.ndarray] = {}
        self.streams: dict[int, FakeStream] = {}
        self.events: dict[int, FakeEvent] = {}
        self.log: list[tuple[str, int | None]] = []
        self.current_device: dict[int, int] = {}  # host thread id -> device
        #: stream-ordered pools: each device's default pool (release threshold 0) and any created
        self.pools: dict[int, FakePool] = {}
        self._pool_of: dict[int, tuple[FakePool, int]] = {}  # allocation -> (its pool, the block size)
        #: what reached the driver: allocations no pool's reserve could serve, and releases of unused reserve
        self.driver_allocations = 0
        self.driver_releases = 0
        self.contexts: set[int] = set()  # devices whose primary context exists
        # stream 0 is the legacy default stream: synchronous with the host in this model
        self.streams[0] = FakeStream(self, 0, immediate=True)

    # -- devices ---------------------------------------------------------------------------------
    def set_device(self, index: int) -> bool:
        if not 0 <= index < len(self.names):
            return False
        self.current_device[threading.get_ident()] = index
        self.contexts.add(index)
        return True

    def device(self) -> int:
        return self.current_device.get(threading.get_ident(), 0)

    def has_context(self) -> bool:
        return self.device() in self.contexts

    # -- memory ----------------------------------------------------------------------------------
    def malloc(self, nbytes: int, pool: FakePool | None = None) -> int:
        """New device memory; from ``pool``'s reserve when given (the driver when it must grow), else the driver's."""
        with self.lock:
            size = max(int(nbytes), 1)
            if pool is None or not pool.take(size):
                self.driver_allocations += 1
            # cudaMalloc* returns 256-byte aligned memory (TensorRT relies on it): over-allocate and align
            raw = np.empty(size + ALIGNMENT, np.uint8)
            start = -raw.ctypes.data % ALIGNMENT
            buf = raw[start : start + size]
            ptr = buf.ctypes.data
            self.allocations[ptr] = buf
            if pool is not None:
                self._pool_of[ptr] = (pool, size)
            self.contexts.add(self.device())
            return ptr

    def free(self, ptr: int) -> bool:
        with self.lock:
            found = self.allocations.pop(int(ptr), None) is not None
            self.release_to_pool(ptr)
            return found

    def release_to_pool(self, ptr: int) -> None:
        """Return a pooled allocation's bytes to its pool's reserve (its memory stays readable until freed).

        ``cudaFreeAsync`` does this when it is called: later allocations on the same stream may reuse the
        block at once, because they are ordered after the free (CUDA's stream-ordered allocator)."""
        with self.lock:
            pooled = self._pool_of.pop(int(ptr), None)
            if pooled is not None:
                pooled[0].give_back(pooled[1])

    def default_pool(self, device: int) -> FakePool:
        with self.lock:
            key = -1 - device  # default pools get negative keys; created pools use handles
            if key not in self.pools:
                self.pools[key] = FakePool(next(self._handles), device)
            return self.pools[key]

    def create_pool(self, device: int) -> FakePool:
        with self.lock:
            pool = FakePool(next(self._handles), device)
            self.pools[pool.handle] = pool
            return pool

    def pool(self, handle: Any) -> FakePool:
        for pool in self.pools.values():
            if pool.handle == int(handle):
                return pool
        raise AssertionError(f"memory pool {int(handle):#x} was never created (or was destroyed)")

    def _trim_pools(self) -> None:
        # CUDA releases a pool's unused reserve above its threshold at stream, event and device synchronisations
        for pool in self.pools.values():
            self.driver_releases += pool.trim()

    def live_bytes(self) -> int:
        with self.lock:
            return sum(b.nbytes for b in self.allocations.values())

    def owner(self, ptr: int, nbytes: int) -> bool | None:
        """True when ``[ptr, ptr+nbytes)`` lies in a live allocation; ``None`` when ``ptr`` is not device memory
        from ``cudaMalloc*`` at all (e.g. a torch CPU tensor of the torch double); raises on overruns."""
        with self.lock:
            for base, buf in self.allocations.items():
                if base <= ptr < base + buf.nbytes:
                    if ptr + nbytes > base + buf.nbytes:
                        raise AssertionError(
                            f"access of {nbytes} bytes at {ptr:#x} overruns its {buf.nbytes}-byte allocation"
                        )
                    return True
            return None

    def read(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.owner(ptr, nbytes)
        if nbytes == 0:
            return np.empty(shape, dtype)
        raw = (ctypes.c_char * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self.owner(ptr, array.nbytes)
        if array.nbytes:
            ctypes.memmove(ptr, array.ctypes.data, array.nbytes)

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        for ptr in (dst, src):
            self.owner(ptr, nbytes)
        if nbytes:
            ctypes.memmove(dst, src, nbytes)

    # -- streams and events ------------------------------------------------------------------------
    def new_stream(self, immediate: bool = False) -> int:
        with self.lock:
            handle = next(self._handles)
            self.streams[handle] = FakeStream(self, handle, immediate)
            self.contexts.add(self.device())
            return handle

    def stream(self, handle: Any) -> FakeStream:
        handle = int(handle)
        if handle not in self.streams:
            raise AssertionError(f"stream {handle:#x} was never created (or was destroyed)")
        return self.streams[handle]

    def destroy_stream(self, handle: Any) -> None:
        stream = self.stream(handle)
        stream.run()
        stream.destroyed = True
        del self.streams[int(handle)]

    def new_event(self) -> int:
        with self.lock:
            handle = next(self._handles)
            self.events[handle] = FakeEvent(handle)
            return handle

    def event(self, handle: Any) -> FakeEvent:
        handle = int(handle)
        if handle not in self.events:
            raise AssertionError(f"event {handle:#x} was never created (or was destroyed)")
        return self.events[handle]

    def record(self, event: int, stream: int) -> None:
        ev = self.event(event)
        st = self.stream(stream)
        ev.stream, ev.time_s = st.handle, None

        def mark() -> None:
            ev.time_s = time.perf_counter()

        st.enqueue(f"record event {event:#x}", mark)
        ev.seq = st.queued

    def wait(self, stream: int, event: int) -> None:
        """``stream`` runs nothing queued after this before ``event``'s work has run."""
        ev = self.event(event)
        if ev.stream is None:
            return  # waiting on a never-recorded event completes at once (CUDA's rule)
        source, upto = self.stream(ev.stream), ev.seq
        self.stream(stream).enqueue(f"wait event {event:#x}", lambda: source.run(upto))

    def sync_event(self, event: int) -> None:
        ev = self.event(event)
        if ev.stream is not None:
            self.stream(ev.stream).run(ev.seq)
        self._trim_pools()

    def sync_stream(self, stream: int) -> None:
        self.stream(stream).run()
        self._trim_pools()

    def sync_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.run()
        self._trim_pools()


def release_host_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps it otherwise; the engines' ONNX runs are large)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
