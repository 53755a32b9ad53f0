"""TensorRT and TensorRT for RTX engines, read top to bottom: check, load, run.

::

    engine folder ── check_engines_runnable: manifest vs this device's compute capability and TensorRT
       └─ device memory (runtime/device_memory): stream and CUDA context on device_index
       └─ load_engines: Runtime → deserialize (None → one line naming file, versions, GPU)
                        → I/O names, modes and dtypes checked against the graph specs
       └─ contexts: one per graph (TensorRT for RTX: the folder's runtime settings and its runtime cache),
                    all running in one shared scratch block (share_scratch)
       └─ TensorRTBackend._run, per call: set_input_shape (refusal names the profile's min and max)
          → set_tensor_address (fresh outputs) → execute_async_v3 on the backend's stream
          → outputs handed over by event (torch) or on the same stream (cuda-python)
       └─ teardown, once (close(), the backend collected, or interpreter exit): runtime cache saved while its
          contexts live, then contexts, engines, runtime, cache and device memory freed in that order

Nothing here needs a GPU to be *read*; running it does. CI runs this whole path through the doubles in
:mod:`sam3_trt.testing` (API use and data plumbing, never kernels or numerics).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...engines.parse import load_trt, make_logger
from ...engines.rtx_runtime import RtxRuntimeSettings
from ...errors import Sam3TrtError
from ...manifest import manifest_specs
from ...specs import ALL_SPECS, GraphSpec
from ..device_memory import DeviceMemory, Timer, open_device_memory
from .base import Backend

#: numpy dtype name -> TensorRT DataType member name
_TRT_DTYPES = {"float32": "FLOAT", "float16": "HALF", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}


class RuntimeCacheFile:
    """TensorRT for RTX's runtime cache (kernels specialised on this GPU), kept beside the engines.

    Loaded once; a file the runtime rejects (another TensorRT for RTX, GPU or driver) is reported and
    rebuilt, never silently used. Saved on close only when its bytes changed, through a temporary file renamed
    into place, so processes sharing an engine folder never read a half-written cache. "Changed" compares the
    serialised bytes: that an unchanged cache serialises to the same bytes is assumed (NVIDIA does not document
    it; only a GPU run can confirm it). Where it does not hold, the file is rewritten once per close, never
    more (tested with a double whose every serialisation differs).

    Args:
        path: The cache file (``runtime_cache.bin`` in the engine folder).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cache: Any = None
        self._loaded = b""

    def attach(self, config: Any) -> None:
        """Give ``config`` (an ``IRuntimeConfig``) the shared cache, creating it from the file on first use."""
        if self.cache is None:
            self.cache = config.create_runtime_cache()
            if self.path.is_file():
                blob = self.path.read_bytes()
                if self.cache.deserialize(blob):
                    self._loaded = blob
                else:
                    warnings.warn(
                        f"TensorRT for RTX rejected the runtime cache {self.path} (made by another TensorRT for RTX, "
                        "GPU or driver); kernels are specialised again and the file is replaced on close",
                        stacklevel=3,
                    )
        if not config.set_runtime_cache(self.cache):
            raise Sam3TrtError(f"TensorRT for RTX refused the runtime cache of {self.path.parent}")

    def save(self) -> None:
        """Write the cache if it changed since it was loaded (atomically; a read-only folder only warns)."""
        if self.cache is None:
            return
        data = bytes(self.cache.serialize())
        if not data or data == self._loaded:
            return
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # a read-only engine folder still runs; it just specialises again next time
            warnings.warn(
                f"could not save the TensorRT for RTX runtime cache in {self.path.parent}: {exc}", stacklevel=2
            )
            return
        self._loaded = data


@dataclasses.dataclass
class _Loaded:
    runtime: Any
    engines: dict[str, Any]
    contexts: dict[str, Any]
    #: the one scratch block every context runs in (see :func:`share_scratch`)
    scratch: Any = None


def _describe_device(gpu: Any, device_index: int) -> str:
    return f"{gpu.names[device_index]} ({gpu.sm_of(device_index)})" if gpu.available else "no GPU"


def load_engines(
    trt: Any,
    logger: Any,
    folder: Path,
    manifest: Mapping[str, Any],
    gpu: Any,
    device_index: int,
    runtime_cache: RuntimeCacheFile | None,
    rtx_runtime: RtxRuntimeSettings | None = None,
) -> _Loaded:
    """Deserialize the engines ``folder``'s manifest lists (the image graphs; with ``--video`` exports, the
    tracker graphs too) and create one execution context each.

    Args:
        trt: The flavour's TensorRT module.
        logger: From :func:`~sam3_trt.engines.parse.make_logger`.
        folder: Engine folder.
        manifest: Its manifest.
        gpu: Local GPUs (for messages).
        device_index: The device the engines load on (current while this runs).
        runtime_cache: TensorRT for RTX's runtime cache, or ``None`` for standard TensorRT.
        rtx_runtime: TensorRT for RTX's runtime settings, set on every context (default: the manifest's).

    Raises:
        Sam3TrtError: A missing or undeserializable engine, or one whose I/O differs from the specs.
    """
    if runtime_cache is not None and rtx_runtime is None:
        rtx_runtime = RtxRuntimeSettings.from_manifest(manifest)
    runtime = trt.Runtime(logger)
    if manifest.get("version_compatible"):
        # version-compatible plans carry their own lean runtime (host code); only trusted folders get here
        runtime.engine_host_code_allowed = True
    engines: dict[str, Any] = {}
    contexts: dict[str, Any] = {}
    for graph, spec in manifest_specs(manifest).items():
        path = folder / spec.engine_file
        if not path.is_file():
            raise Sam3TrtError(f"{path} is missing; rebuild the folder with `sam3-trt build --gpu auto`")
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            why = logger.last_error() or "no message from TensorRT"
            raise Sam3TrtError(
                f"TensorRT could not deserialize {path} ({why}): it was built by {manifest.get('flavour')} "
                f"{manifest.get('trt_version')} for {', '.join(manifest.get('compute_capabilities', [])) or '?'}, "
                f"this is {trt.__name__} {trt.__version__} on {_describe_device(gpu, device_index)}; "
                "the file is truncated or from another TensorRT: rebuild with `sam3-trt build --gpu auto`"
            )
        check_engine_io(trt, engine, spec, path)
        engines[graph] = engine
        # scratch (activation) memory is ours to give: one block for all contexts (see share_scratch)
        user_managed = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        if runtime_cache is None:
            context = engine.create_execution_context(user_managed)
        else:
            config = engine.create_runtime_config()
            config.set_execution_context_allocation_strategy(user_managed)
            rtx_runtime.apply(trt, config)
            runtime_cache.attach(config)
            context = engine.create_execution_context(config)
        if context is None:
            why = logger.last_error() or "out of device memory?"
            raise Sam3TrtError(f"TensorRT could not create an execution context for {path} ({why})")
        contexts[graph] = context
    return _Loaded(runtime, engines, contexts)


def share_scratch(loaded: _Loaded, memory: DeviceMemory) -> int:
    """Give every context of ``loaded`` the same scratch block, as large as the largest engine needs.

    TensorRT's default (``STATIC``) reserves each context's scratch for its profile maximum: 3 blocks for the
    image graphs, 7 with the tracker's. This backend runs one graph at a time (its lock) on one stream, so a
    run's scratch is free again before the next run's kernels start (stream order), and one block serves all.

    Returns:
        The block's size in bytes.
    """
    size = max(int(engine.device_memory_size_v2) for engine in loaded.engines.values())
    loaded.scratch = memory.empty((max(size, 1),), "uint8")
    address = memory.pointer(loaded.scratch)
    for context in loaded.contexts.values():
        context.set_device_memory(address, size)
    return size


def check_engine_io(trt: Any, engine: Any, spec: GraphSpec, path: Path) -> None:
    """Raise unless ``engine``'s I/O tensors have the spec's names, directions and dtypes."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for tensors, mode in ((spec.inputs, trt.TensorIOMode.INPUT), (spec.outputs, trt.TensorIOMode.OUTPUT)):
        for t in tensors:
            if t.name not in names:
                raise Sam3TrtError(
                    f"{path} has no tensor {t.name!r} (it has {names}); it was built from another export: "
                    "rebuild with `sam3-trt build --gpu auto`"
                )
            if engine.get_tensor_mode(t.name) != mode:
                raise Sam3TrtError(f"{path}: tensor {t.name!r} is not an {mode.name.lower()} of the engine")
            want = getattr(trt.DataType, _TRT_DTYPES[t.dtype])
            got = engine.get_tensor_dtype(t.name)
            if got != want:
                raise Sam3TrtError(f"{path}: tensor {t.name!r} is {got.name}, the specs say {t.dtype}; rebuild")


class TensorRTBackend(Backend):
    """The runner over TensorRT / TensorRT for RTX engines (see the module docstring). Needs an NVIDIA GPU.

    Args:
        folder: Engine folder (checked against this GPU and TensorRT version before anything is loaded).
        manifest: Its manifest.
        device_index: CUDA device to run on (runtime, engines, contexts and memory all live there).
        device_memory: ``"auto"``, ``"torch"`` or ``"cuda-python"`` (:mod:`sam3_trt.runtime.device_memory`).
        check_target: Refuse engines whose manifest names another compute capability before TensorRT sees
            them. ``False`` leaves the verdict to TensorRT (``gpu-check`` asks whether TensorRT for RTX runs
            plans built for a listed architecture on an unlisted one); the TensorRT version is still checked.
        rtx_runtime: TensorRT for RTX's runtime settings (:mod:`sam3_trt.engines.rtx_runtime`) in place of
            the ones the folder's manifest records (``bench`` compares CUDA graphs on and off this way).
    """

    name = "tensorrt"
    RUNTIME_CACHE = "runtime_cache.bin"

    def __init__(
        self,
        folder: str | Path,
        manifest: Mapping[str, Any],
        device_index: int = 0,
        device_memory: str = "auto",
        check_target: bool = True,
        rtx_runtime: RtxRuntimeSettings | None = None,
    ) -> None:
        super().__init__()
        from ...device import gpu_info
        from ..artifacts import Artifacts, check_engines_runnable

        self.folder = Path(folder)
        self.device_index = int(device_index)
        self.gpu = gpu_info()
        checked = dict(manifest)
        if not check_target and self.gpu.available:
            # same check, as if the plans named this GPU: the version and device-index rules still apply
            checked["compute_capabilities"] = [self.gpu.sm_of(self.device_index)]
        check_engines_runnable(Artifacts(self.folder, "engines", checked), self.gpu, self.device_index)
        self.flavour = manifest["flavour"]
        self.trt = load_trt(self.flavour)
        self.logger = make_logger(self.trt)
        # memory first: it creates the CUDA context the runtime (and the RTX runtime cache) needs
        self.memory: DeviceMemory = open_device_memory(device_memory, self.device_index)
        self.result_device = self.memory.result_device
        self.runtime_cache = RuntimeCacheFile(self.folder / self.RUNTIME_CACHE) if self.flavour == "rtx" else None
        #: TensorRT for RTX's runtime settings (``None`` for standard TensorRT)
        self.rtx_runtime = (
            (rtx_runtime or RtxRuntimeSettings.from_manifest(manifest)) if self.flavour == "rtx" else None
        )
        self.shape_buckets = self.rtx_runtime.shape_buckets if self.rtx_runtime is not None else ()
        self._timers: dict[str, Timer] = {}
        try:
            with self.memory.activate():
                loaded = load_engines(
                    self.trt,
                    self.logger,
                    self.folder,
                    manifest,
                    self.gpu,
                    self.device_index,
                    self.runtime_cache,
                    self.rtx_runtime,
                )
                #: bytes of the scratch block all contexts share
                self.scratch_bytes = share_scratch(loaded, self.memory)
        except BaseException:
            self.memory.close()
            raise
        self.runtime, self.engines, self.contexts = loaded.runtime, loaded.engines, loaded.contexts
        self.graphs = tuple(self.engines)
        # a backend never closed (a script's processor, one dropped by a server) still saves the compiled kernels
        # and frees in order: the finalizer holds what teardown needs, never the backend itself
        self._teardown = weakref.finalize(self, _teardown, self.memory, self.runtime_cache, loaded)

    @property
    def last_gpu_ms(self) -> dict[str, float]:
        """Graph name -> engine milliseconds of its latest run (CUDA events on the backend's stream)."""
        with self._lock:
            return {graph: timer.elapsed_ms() for graph, timer in self._timers.items()}

    def synchronize(self) -> None:
        """Wait for every run queued on the backend's stream."""
        self.memory.synchronize()

    def _set_shape(self, graph: str, ctx: Any, name: str, shape: tuple[int, ...]) -> None:
        if ctx.set_input_shape(name, shape):
            return
        lo, _, hi = self.engines[graph].get_tensor_profile_shape(name, 0)
        why = self.logger.last_error()
        raise Sam3TrtError(
            f"For input: {name}, TensorRT refused shape {shape}: the engine's profile allows {tuple(lo)} to "
            f"{tuple(hi)}{f' ({why})' if why else ''}; rebuild the engines with a larger range in the specs"
        )

    def _bind(self, ctx: Any, name: str, address: int) -> None:
        if not ctx.set_tensor_address(name, address):
            raise Sam3TrtError(f"TensorRT refused the device address of tensor {name!r} ({self.logger.last_error()})")

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        spec = ALL_SPECS[graph]
        ctx = self.contexts[graph]
        mem = self.memory
        with mem.activate():
            inputs = []
            for t in spec.inputs:
                x = mem.to_device(feeds[t.name], t.dtype)
                inputs.append(x)
                self._set_shape(graph, ctx, t.name, t.resolve(sizes))
                self._bind(ctx, t.name, mem.pointer(x))
            outputs = {}
            for t in spec.outputs:
                shape = t.resolve(sizes)
                engine_shape = tuple(ctx.get_tensor_shape(t.name))
                if engine_shape != shape:
                    raise Sam3TrtError(
                        f"For output: {t.name}, the engine computes shape {engine_shape}, the specs {shape}"
                    )
                out = mem.empty(shape, t.dtype)
                self._bind(ctx, t.name, mem.pointer(out))
                outputs[t.name] = out
            mem.wait_for_caller()
            mem.start_timer()
            if not ctx.execute_async_v3(mem.stream_handle):
                why = self.logger.last_error() or "no message from TensorRT"
                raise Sam3TrtError(
                    f"TensorRT execution of {graph} failed on {_describe_device(self.gpu, self.device_index)} "
                    f"with {dict(sizes)} ({why})"
                )
            self._timers[graph] = mem.stop_timer()
            mem.hand_over(inputs)
        return outputs

    def _release(self) -> None:
        self._timers.clear()
        self.runtime = None
        self._teardown()


def _teardown(memory: DeviceMemory, runtime_cache: RuntimeCacheFile | None, loaded: _Loaded) -> None:
    """Save the runtime cache while its contexts live, then free contexts, engines, the runtime and the memory."""
    try:
        memory.synchronize()
        if runtime_cache is not None:
            with memory.activate():
                runtime_cache.save()
    finally:
        # contexts before engines before the runtime (TensorRT's documented destruction order); the runtime
        # cache outlives the contexts that use it (NVIDIA's runtime-cache guide); their scratch goes after them
        loaded.contexts.clear()
        loaded.scratch = None
        loaded.engines.clear()
        loaded.runtime = None
        memory.close()
