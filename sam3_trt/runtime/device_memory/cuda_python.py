"""Device memory through cuda-python (``cuda.bindings.runtime``): the TensorRT runtime without torch.

This is the default for a torch-free install (``pip install 'sam3-trt[rtx]'`` or ``[gpu]``). Results are
:class:`DeviceArray` objects (a typed view of device memory, like Polygraphy's ``DeviceView``): they stay
on the GPU, so the image features a processor keeps are fed back to the decoder without a host round
trip, and ``numpy()`` / ``np.asarray`` copies them to the host when needed.

Allocation is stream-ordered (``cudaMallocFromPoolAsync`` / ``cudaFreeAsync`` on the backend's stream) from the
backend's own pool, which keeps freed memory (release threshold at its maximum): fresh outputs per run cost
no device synchronisation and, once warm, no allocation from the driver. Host inputs are staged in pinned
memory (:class:`_PinnedRing`), so their copies are queued behind running engines instead of waiting for them.
Every call's status is checked (:func:`check`).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import itertools
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ... import device
from ...errors import Sam3TrtError
from .base import TENSOR_ALIGNMENT, CudaError, DeviceMemory, Timer, numpy_dtype


def check(result: Any, call: str) -> Any:
    """Unpack a cuda-python result ``(err, *values)``, raising :class:`CudaError` naming ``call`` on failure.

    Args:
        result: What a ``cuda.bindings.runtime`` function returned (a tuple whose first item is the status).
        call: The call as written (``"cudaMallocAsync(4096)"``), for the message.

    Returns:
        ``None``, the single value, or the tuple of values after the status.
    """
    rt = device.cudart()
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = text.decode() if isinstance(text, bytes) else str(text)
        raise CudaError(f"CUDA call {call} failed: {name} ({text})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class _Stream:
    """The backend's stream; destroyed when the backend and every array allocated on it are gone."""

    def __init__(self, rt: Any, device_index: int) -> None:
        self.rt = rt
        self.device_index = device_index
        check(rt.cudaSetDevice(device_index), f"cudaSetDevice({device_index})")
        self.handle = check(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags(cudaStreamNonBlocking)"
        )
        self.alive = True
        self._finalizer = weakref.finalize(self, _destroy_stream, rt, self.handle, device_index)

    def destroy(self) -> None:
        if self.alive:
            self.alive = False
            self._finalizer()


def _destroy_stream(rt: Any, handle: Any, device_index: int) -> None:
    # finalizers ignore statuses on purpose: they may run at interpreter exit, after the driver is gone
    rt.cudaStreamSynchronize(handle)
    rt.cudaStreamDestroy(handle)


class _Pool:
    """The backend's own stream-ordered memory pool, which keeps freed memory for the next run.

    ``cudaMallocAsync`` draws from the device's default pool, whose release threshold is 0: every
    synchronisation (each copy of results to the host) hands its freed blocks back to the driver, and the
    next run maps its outputs afresh. An own pool with the threshold at its maximum keeps them (CUDA's
    "Stream Ordered Memory Allocator" guide), without changing the default pool other libraries share.
    """

    def __init__(self, rt: Any, device_index: int) -> None:
        from cuda.bindings import driver

        props = rt.cudaMemPoolProps()
        props.allocType = rt.cudaMemAllocationType.cudaMemAllocationTypePinned
        props.location.type = rt.cudaMemLocationType.cudaMemLocationTypeDevice
        props.location.id = device_index
        self.handle = check(rt.cudaMemPoolCreate(props), f"cudaMemPoolCreate(device {device_index})")
        self._finalizer = weakref.finalize(self, rt.cudaMemPoolDestroy, self.handle)
        check(
            rt.cudaMemPoolSetAttribute(
                self.handle, rt.cudaMemPoolAttr.cudaMemPoolAttrReleaseThreshold, driver.cuuint64_t(2**64 - 1)
            ),
            "cudaMemPoolSetAttribute(cudaMemPoolAttrReleaseThreshold)",
        )

    def destroy(self) -> None:
        # CUDA defers the release of a pool whose allocations are still live until they are freed
        self._finalizer()


class _Allocation:
    """``nbytes`` of device memory from the backend's pool, freed on the stream when unreferenced."""

    def __init__(self, stream: _Stream, pool: _Pool, nbytes: int) -> None:
        self.stream = stream
        self.nbytes = nbytes
        # zero-byte allocations are legal in TensorRT (empty tensors) but a 0-byte stream allocation returns NULL
        size = max(nbytes, 1)
        self.ptr = int(
            check(
                stream.rt.cudaMallocFromPoolAsync(size, pool.handle, stream.handle), f"cudaMallocFromPoolAsync({size})"
            )
        )
        weakref.finalize(self, _free, stream, self.ptr)


def _free(stream: _Stream, ptr: int) -> None:
    rt = stream.rt
    if stream.alive:
        rt.cudaFreeAsync(ptr, stream.handle)
    else:  # the backend is closed and its stream synchronised: free at once
        rt.cudaFree(ptr)


#: Pinned bytes beyond two of the largest input, for the small inputs staged between them.
SMALL_STAGING = 2**20


class _PinnedRing:
    """Page-locked host memory that host inputs are staged in before their copy to the device.

    From pageable memory CUDA may make ``cudaMemcpyAsync`` synchronous with the host (CUDA's "API synchronization
    behavior" notes): the copy then waits for every engine run queued before it, so uploading the next image
    stalls the host behind the current one. From pinned memory the copy is queued like any other work. The ring
    reuses one pinned block: a region is written again only after the copy that last read it has completed (one
    event per copy, asked about only when the ring comes round to it). It grows to twice the largest input plus
    :data:`SMALL_STAGING` for the small inputs (token ids, boxes) staged between two images.
    """

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.ptr = 0
        self.capacity = 0
        self._head = 0
        self._pending: collections.deque[tuple[int, int, Any]] = collections.deque()  # (start, end, event)
        self._events: list[Any] = []  # spare events

    def stage(self, host: np.ndarray) -> tuple[int, tuple[int, int]]:
        """Copy ``host`` into the ring; returns its pinned address and the region (for :meth:`commit`)."""
        size = -(-max(host.nbytes, 1) // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT
        if size > self.capacity:  # two of the largest input in flight, and room for the small ones between
            self._grow(2 * size + SMALL_STAGING)
        if self._head + size > self.capacity:
            self._head = 0
        start, end = self._head, self._head + size
        done = []  # copies that read this region: oldest first, so the newest one's completion covers them all
        while self._pending and self._pending[0][0] < end and start < self._pending[0][1]:
            done.append(self._pending.popleft()[2])
        if done:
            self._wait(done[-1])
            self._events += done[:-1]
        ctypes.memmove(self.ptr + start, host.ctypes.data, host.nbytes)
        self._head = end
        return self.ptr + start, (start, end)

    def commit(self, region: tuple[int, int], stream: Any) -> None:
        """Mark ``region`` in use until the work queued on ``stream`` so far (its copy) has run."""
        event = (
            self._events.pop()
            if self._events
            else check(self.rt.cudaEventCreateWithFlags(self.rt.cudaEventDisableTiming), "cudaEventCreateWithFlags")
        )
        check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord(staging)")
        self._pending.append((*region, event))

    def _wait(self, event: Any) -> None:
        # most copies finished long ago: ask first, and block the host only for one still queued
        status = self.rt.cudaEventQuery(event)
        status = status[0] if isinstance(status, tuple) else status
        if status == self.rt.cudaError_t.cudaErrorNotReady:
            check(self.rt.cudaEventSynchronize(event), "cudaEventSynchronize(staging)")
        else:
            check(status, "cudaEventQuery(staging)")
        self._events.append(event)

    def _grow(self, capacity: int) -> None:
        self.free()
        self.ptr = int(check(self.rt.cudaMallocHost(capacity), f"cudaMallocHost({capacity})"))
        self.capacity = capacity

    def free(self) -> None:
        """Wait for every staged copy, then give the pinned block and the events back."""
        if self._pending:
            self._wait(self._pending[-1][2])
            self._events += [entry[2] for entry in list(self._pending)[:-1]]
            self._pending.clear()
        if self.ptr:
            check(self.rt.cudaFreeHost(self.ptr), "cudaFreeHost")
        self.ptr, self.capacity, self._head = 0, 0, 0
        for event in self._events:
            self.rt.cudaEventDestroy(event)
        self._events.clear()


class DeviceArray:
    """A contiguous, typed view of device memory, without torch.

    Args:
        memory: The provider that owns the stream the array's copies run on.
        allocation: The memory it views (kept alive by every view).
        shape: Array shape.
        dtype: numpy dtype.
        offset: Byte offset of the view in ``allocation``.
    """

    def __init__(
        self, memory: CudaPythonMemory, allocation: _Allocation, shape: Sequence[int], dtype: Any, offset: int = 0
    ) -> None:
        self._memory = memory
        self._allocation = allocation
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._offset = offset
        if offset + self.nbytes > allocation.nbytes:
            raise ValueError(f"view of {self.nbytes} bytes at {offset} exceeds its {allocation.nbytes}-byte allocation")

    @property
    def ptr(self) -> int:
        """Device address of the first element."""
        return self._allocation.ptr + self._offset

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, device={self._memory.device_index})"

    def __getitem__(self, index: int | slice) -> DeviceArray:
        """Leading-axis views only (``a[i]``, ``a[i:j]``): what the processor needs, without copies."""
        rows = self.shape[0]
        row_bytes = self.nbytes // rows if rows else 0
        if isinstance(index, (int, np.integer)):
            i = int(index) + rows if index < 0 else int(index)
            if not 0 <= i < rows:
                raise IndexError(f"index {index} is out of range for axis 0 of size {rows}")
            return DeviceArray(self._memory, self._allocation, self.shape[1:], self.dtype, self._offset + i * row_bytes)
        if isinstance(index, slice):
            start, stop, step = index.indices(rows)
            if step != 1:
                raise IndexError("DeviceArray supports only contiguous slices (step 1); copy to the host first")
            count = max(0, stop - start)
            return DeviceArray(
                self._memory, self._allocation, (count, *self.shape[1:]), self.dtype, self._offset + start * row_bytes
            )
        raise IndexError(f"DeviceArray supports a[int] and a[start:stop], not {index!r}; use .numpy() first")

    def numpy(self) -> np.ndarray:
        """Copy to a new host array (waits for the backend's queued work on this array)."""
        return self._memory.to_host(self)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        host = self.numpy()
        return host if dtype is None else host.astype(dtype, copy=False)


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` positions in ``rows`` (ascending) of its runs of consecutive values."""
    if not rows.size:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    edges = [0, *breaks.tolist(), int(rows.size)]
    return list(itertools.pairwise(edges))


class _EventTimer(Timer):
    def __init__(self, memory: CudaPythonMemory, start: Any, end: Any) -> None:
        self._rt, self._start, self._end = memory.rt, start, end
        self._ms: float | None = None
        # events of timers nobody reads are destroyed with the timer (CUDA frees them once they complete)
        weakref.finalize(self, _destroy_events, memory.rt, start, end)

    def elapsed_ms(self) -> float:
        if self._ms is None:
            check(self._rt.cudaEventSynchronize(self._end), "cudaEventSynchronize(end of run)")
            self._ms = float(check(self._rt.cudaEventElapsedTime(self._start, self._end), "cudaEventElapsedTime"))
        return self._ms


def _destroy_events(rt: Any, *events: Any) -> None:
    for event in events:
        rt.cudaEventDestroy(event)


class CudaPythonMemory(DeviceMemory):
    """cuda-python device memory (see the module docstring).

    Args:
        device_index: CUDA device.
    """

    name = "cuda-python"

    def __init__(self, device_index: int) -> None:
        super().__init__(device_index)
        try:
            self.rt = device.cudart()
        except ImportError:
            raise Sam3TrtError(
                "device_memory='cuda-python' needs cuda-python: pip install 'sam3-trt[rtx]' (or pip install cuda-python)"
            ) from None
        try:
            count = check(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except CudaError as exc:
            raise Sam3TrtError(f"no usable NVIDIA GPU for the TensorRT backend: {exc}") from None
        if not 0 <= device_index < count:
            raise Sam3TrtError(f"device_index={device_index}, but this machine has {count} CUDA device(s)")
        self._stream = _Stream(self.rt, device_index)
        self._pool = _Pool(self.rt, device_index)
        self._staging = _PinnedRing(self.rt)
        self._timer_start: Any = None

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        # the current device is per host thread: set it on every run, not once
        check(self.rt.cudaSetDevice(self.device_index), f"cudaSetDevice({self.device_index})")
        yield

    def wait_for_caller(self) -> None:
        # inputs come from the host (copied on our stream) or from our own DeviceArrays (produced on our
        # stream): nothing the caller queued on another stream can be pending
        return None

    def _allocate(self, shape: Sequence[int], dtype: Any) -> DeviceArray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return DeviceArray(self, _Allocation(self._stream, self._pool, nbytes), shape, dtype)

    def empty(self, shape: Sequence[int], dtype: str) -> DeviceArray:
        return self._allocate(shape, numpy_dtype(dtype))

    def to_device(self, value: Any, dtype: str) -> DeviceArray:
        want = numpy_dtype(dtype)
        if isinstance(value, DeviceArray):
            if value._memory is not self:
                raise Sam3TrtError(
                    f"a DeviceArray of another backend ({value!r}) was passed; pass host arrays between backends"
                )
            if value.dtype != want:
                raise Sam3TrtError(f"device array has dtype {value.dtype}, the engine expects {want}")
            if value.ptr % TENSOR_ALIGNMENT:  # a row view (text_mask[1] starts 32 bytes in): copy it aligned
                return self._copy(value)
            return value
        from ..arrays import to_numpy

        host = np.ascontiguousarray(to_numpy(value), dtype=want)
        out = self._allocate(host.shape, want)
        staged, region = self._staging.stage(host)  # pinned: the copy is queued, the host does not wait
        check(
            self.rt.cudaMemcpyAsync(
                out.ptr,
                staged,
                host.nbytes,
                self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                self.stream_handle,
            ),
            f"cudaMemcpyAsync(host to device, {host.nbytes} bytes)",
        )
        self._staging.commit(region, self.stream_handle)
        return out

    def _copy(self, array: DeviceArray) -> DeviceArray:
        """``array`` in a new allocation (aligned), copied on the backend's stream."""
        out = self._allocate(array.shape, array.dtype)
        check(
            self.rt.cudaMemcpyAsync(
                out.ptr, array.ptr, array.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self.stream_handle
            ),
            f"cudaMemcpyAsync(device to device, {array.nbytes} bytes)",
        )
        return out

    def stack(self, arrays: Sequence[DeviceArray]) -> DeviceArray:
        """Arrays of one shape and dtype stacked on a new leading axis, on the device (one array: a view).

        Cached text features are stacked into a decoder batch this way, without a round trip through the host.
        """
        first = arrays[0]
        if any(a.shape != first.shape or a.dtype != first.dtype or a._memory is not self for a in arrays):
            raise Sam3TrtError("stack needs device arrays of one shape and dtype from this backend")
        if len(arrays) == 1:
            return DeviceArray(self, first._allocation, (1, *first.shape), first.dtype, first._offset)
        out = self._allocate((len(arrays), *first.shape), first.dtype)
        for i, array in enumerate(arrays):
            check(
                self.rt.cudaMemcpyAsync(
                    out.ptr + i * array.nbytes,
                    array.ptr,
                    array.nbytes,
                    self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                    self.stream_handle,
                ),
                f"cudaMemcpyAsync(device to device, {array.nbytes} bytes)",
            )
        return out

    def pointer(self, array: DeviceArray) -> int:
        return array.ptr

    def to_host(self, array: DeviceArray) -> np.ndarray:
        """Copy ``array`` to a new host array after the work queued on the backend's stream."""
        return self.gather_to_host([(array, None)])[0]

    def gather_to_host(self, items: Sequence[tuple[DeviceArray, Sequence[int] | None]]) -> list[np.ndarray]:
        """Leading-axis rows of device arrays as new host arrays: every copy queued, then one synchronisation.

        What a prompt keeps is a few rows of ``pred_masks`` (200 x 288 x 288 float32, 66 MB): copying only
        those rows, one copy per run of consecutive rows, is what keeps a prompt's device-to-host traffic
        proportional to its detections.

        Args:
            items: ``(array, rows)`` pairs: ascending row indices of ``array``'s first axis, or ``None`` for
                the whole array.

        Returns:
            One host array per item (``[len(rows), *shape[1:]]``, or the array's shape for ``None``).
        """
        out: list[np.ndarray] = []
        with self.activate():
            for array, rows in items:
                if array._memory is not self:
                    raise Sam3TrtError(f"{array!r} belongs to another backend; copy it with its own numpy()")
                if rows is None:
                    host = np.empty(array.shape, array.dtype)
                    runs = [(0, 0, array.nbytes)] if array.nbytes else []
                else:
                    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
                    if rows.size and (rows[0] < 0 or rows[-1] >= array.shape[0] or (np.diff(rows) <= 0).any()):
                        raise IndexError(f"rows must be ascending indices below {array.shape[0]}, got {rows.tolist()}")
                    host = np.empty((rows.size, *array.shape[1:]), array.dtype)
                    row_bytes = host.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
                    runs = [(int(rows[a]) * row_bytes, a * row_bytes, (b - a) * row_bytes) for a, b in _runs(rows)]
                for src, dst, nbytes in runs:
                    check(
                        self.rt.cudaMemcpyAsync(
                            host.ctypes.data + dst,
                            array.ptr + src,
                            nbytes,
                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                            self.stream_handle,
                        ),
                        f"cudaMemcpyAsync(device to host, {nbytes} bytes)",
                    )
                out.append(host)
            check(self.rt.cudaStreamSynchronize(self.stream_handle), "cudaStreamSynchronize")
        return out

    def _event(self) -> Any:
        event = check(self.rt.cudaEventCreate(), "cudaEventCreate")
        check(self.rt.cudaEventRecord(event, self.stream_handle), "cudaEventRecord")
        return event

    def start_timer(self) -> None:
        self._timer_start = self._event()

    def stop_timer(self) -> Timer:
        return _EventTimer(self, self._timer_start, self._event())

    def hand_over(self, inputs: Sequence[Any]) -> None:
        # Outputs are DeviceArrays whose every use (numpy(), feeding the next engine) is queued on this same
        # stream, and inputs are device memory freed stream-ordered (cudaFreeAsync): no event is needed.
        return None

    def synchronize(self) -> None:
        with self.activate():
            check(self.rt.cudaStreamSynchronize(self.stream_handle), "cudaStreamSynchronize")

    def memory_info(self) -> dict[str, float]:
        with self.activate():
            free, total = check(self.rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return {"free_mb": round(free / 2**20, 1), "total_mb": round(total / 2**20, 1)}

    def close(self) -> None:
        if self.closed:
            return
        with self.activate():
            check(self.rt.cudaStreamSynchronize(self.stream_handle), "cudaStreamSynchronize (close)")
            self._staging.free()
        # arrays a caller still holds are freed with cudaFree when dropped (the stream is gone by then)
        self._stream.destroy()
        self._pool.destroy()
        super().close()
