"""A double of the TensorRT runtime API (``tensorrt_rtx``'s classes) whose engines run their source ONNX graph.

What it checks: every class is an autospec of the installed ``tensorrt_rtx`` class, and every method call
is bound to one of the real documented overloads (:mod:`.apicheck`), so a name, argument or type our
runtime uses that TensorRT lacks fails the test. Behaviour follows TensorRT's documented contract where
our code depends on it: ``deserialize_cuda_engine`` returns ``None`` (and logs an error) for bytes it
cannot load, for a plan whose host code is not allowed, for a plan built for other compute capabilities than
the current device's (``ampere_plus`` plans: any sm80 or newer), and without a current CUDA context;
``set_input_shape`` returns ``False`` outside the optimisation profile; ``execute_async_v3`` returns
``False`` while a shape or an address is missing and queues the work on the given stream (it runs when
the stream is waited for); the RTX runtime cache serialises what execution specialised and rejects a
blob made for another GPU.

What it does not check: kernels, numerics, speed, memory formats. Engines run the ONNX graph the engine
folder was built from, with ONNX Runtime on the CPU, reading and writing the bound addresses.

Engines are recognised by their bytes: :meth:`TrtDouble.register_folder` reads an engine folder built by
``sam3-trt build`` (real TensorRT for RTX plans) and its manifest, and maps each plan to its graph.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import weakref
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from ..specs import ALL_SPECS, GraphSpec
from .apicheck import check_call, spec_double
from .fake_gpu import FakeGpu, release_host_memory

_CACHE_FORMAT = "sam3-trt double runtime cache v1"


class _Plan:
    """One registered engine: its graph spec, source ONNX file and build facts."""

    def __init__(
        self,
        graph: str,
        onnx: Path,
        version_compatible: bool,
        runner: Any,
        compute_capabilities: tuple[str, ...] = (),
        hardware_compatibility: str = "none",
        profile: dict[str, Any] | None = None,
    ) -> None:
        self.graph = graph
        self.spec: GraphSpec = ALL_SPECS[graph]
        self.onnx = onnx
        self.version_compatible = version_compatible
        self.compute_capabilities = compute_capabilities
        self.hardware_compatibility = hardware_compatibility
        self._runner = runner
        self.io = _graph_io(onnx)
        #: the optimisation profile the engine was built with (its manifest's record; the specs' when absent)
        recorded = profile if profile is not None else {k: list(v) for k, v in self.spec.profile().items()}
        self.profile = {name: tuple(tuple(int(x) for x in s) for s in shapes) for name, shapes in recorded.items()}

    def output_shape(self, name: str, inputs: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        """The shape the engine computes for output ``name`` from the input shapes: the graph's own dims, its
        symbols bound by the inputs that carry them (an output symbol no input carries: the specs' rule)."""
        bound: dict[str, int] = {}
        for tensor in self.io.values():
            if tensor.is_input and tensor.name in inputs:
                for dim, size in zip(tensor.shape, inputs[tensor.name], strict=True):
                    if isinstance(dim, str):
                        bound[dim] = size
        dims = self.io[name].shape
        if all(isinstance(d, int) or d in bound for d in dims):
            return tuple(d if isinstance(d, int) else bound[d] for d in dims)
        return self.spec.tensor(name).resolve(bound)

    def runs_on(self, capability: tuple[int, int]) -> bool:
        """Whether TensorRT would load this plan on a device of ``capability`` (``(9, 0)``: sm90)."""
        if self.hardware_compatibility == "ampere_plus":
            return tuple(capability) >= (8, 0)
        return f"sm{capability[0]}{capability[1]}" in self.compute_capabilities

    def session(self) -> Any:
        return self._runner.session(self.graph)


class _GraphTensor:
    """One I/O tensor of an engine's source graph, as TensorRT would report it."""

    def __init__(self, name: str, is_input: bool, dtype: str, shape: tuple[int | str, ...]) -> None:
        self.name, self.is_input, self.dtype, self.shape = name, is_input, dtype, shape


#: ONNX element type -> TensorRT DataType name (the types sam3-trt's graphs use at their boundaries)
_ONNX_TYPES = {1: "FLOAT", 10: "HALF", 7: "INT64", 6: "INT32", 9: "BOOL", 3: "INT8", 2: "UINT8"}
_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_,
          "INT8": np.int8, "UINT8": np.uint8}  # fmt: skip


def _graph_io(path: Path) -> dict[str, _GraphTensor]:
    """Names, directions, types and dims of the graph's inputs and outputs: what the engine built from it has,
    whatever the specs say (an engine from another export must fail the runtime's check, as on a GPU)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    io = {}
    for values, is_input in ((graph.input, True), (graph.output, False)):
        for v in values:
            t = v.type.tensor_type
            dims = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim)
            io[v.name] = _GraphTensor(v.name, is_input, _ONNX_TYPES.get(t.elem_type, f"ONNX type {t.elem_type}"), dims)
    return io


class TrtDouble:
    """Module-like double of ``tensorrt_rtx``: ``Runtime`` is the double; everything else is the real module's.

    Args:
        gpu: The host-memory GPU execution reads and writes.
    """

    def __init__(self, gpu: FakeGpu) -> None:
        import tensorrt_rtx

        self._real = tensorrt_rtx
        self.gpu = gpu
        self._plans: dict[str, _Plan] = {}
        #: every runtime, engine and context created (tests inspect them)
        self.runtimes: list[Any] = []
        self.contexts: list[Any] = []
        #: input shapes each graph ran with (what the RTX runtime cache specialises for)
        self.specialised: dict[str, set[tuple]] = {}
        #: per graph: the runtime config's kernel-specialisation and CUDA-graph strategies of its latest context
        self.runtime_settings: dict[str, dict[str, str]] = {}
        # per runtime-config and runtime-cache double (by id): the cache a config carries, a cache's entries
        self._config_cache: dict[int, Any] = {}
        self._config_strategy: dict[int, Any] = {}
        #: every (severity, message) the double logged
        self.log_records: list[tuple[str, str]] = []
        self._cache_state: dict[int, _CacheState] = {}
        #: make every serialisation of a runtime cache differ (a salt), as a runtime whose bytes are not a function
        #: of the cache's content would: sam3-trt must then still write the file at most once per close
        self.salted_cache_bytes = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    # -- setup -----------------------------------------------------------------------------------
    def register_folder(self, engine_folder: str | Path, export_folder: str | Path | None = None) -> None:
        """Recognise the plans of ``engine_folder`` and run them as their source graphs in ``export_folder``.

        Args:
            engine_folder: Folder written by ``sam3-trt build``.
            export_folder: The export it was built from (default: the one its manifest names).
        """
        from ..runtime.backends import OnnxRuntimeBackend

        engine_folder = Path(engine_folder)
        manifest = json.loads((engine_folder / "manifest.json").read_text())
        export = Path(export_folder or manifest["export"]["folder"])
        # ONNX Runtime as the CPU backend runs it (attention fused in memory: unfused, the decoder's
        # 5184-token attention at P=16 needs ~14 GB), arena off so each run gives its memory back
        runner = OnnxRuntimeBackend(export, memory_arena=False)
        for graph, entry in manifest["graphs"].items():
            onnx = export / ALL_SPECS[graph].onnx_file
            if hashlib.sha256(onnx.read_bytes()).hexdigest() != entry["onnx_sha256"]:
                raise AssertionError(f"{onnx} is not the graph {engine_folder / entry['file']} was built from")
            digest = hashlib.sha256((engine_folder / entry["file"]).read_bytes()).hexdigest()
            self._plans[digest] = _Plan(
                graph,
                onnx,
                bool(manifest.get("version_compatible")),
                runner,
                tuple(manifest["compute_capabilities"]),
                manifest.get("hardware_compatibility", "none"),
                entry.get("profile"),
            )

    # -- the API ----------------------------------------------------------------------------------
    def Runtime(self, logger: Any) -> Any:
        trt = self._real
        check_call(trt.Runtime, "__init__", (logger,), {})
        if not isinstance(logger, trt.ILogger):
            raise TypeError(f"Runtime() needs a tensorrt_rtx.ILogger, got {type(logger).__name__}")
        impl = _RuntimeImpl(self, logger)
        runtime = spec_double(trt.Runtime, impl, engine_host_code_allowed=False, logger=logger)
        impl.owner = runtime
        self.runtimes.append(runtime)
        return runtime

    def log(self, logger: Any, severity: str, msg: str) -> None:
        self.log_records.append((severity, msg))
        logger.log(getattr(self._real.ILogger.Severity, severity), msg)


class _RuntimeImpl:
    def __init__(self, double: TrtDouble, logger: Any) -> None:
        self.double = double
        self.logger = logger
        self.owner: Any = None

    def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
        double = self.double
        if not double.gpu.has_context():
            double.log(self.logger, "ERROR", "CUDA initialization failure: no current CUDA context")
            return None
        digest = hashlib.sha256(bytes(memoryview(serialized_engine))).hexdigest()
        plan = double._plans.get(digest)
        if plan is None:
            double.log(self.logger, "ERROR", "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag)")
            return None
        capability = double.gpu.compute_capabilities[double.gpu.device()]
        if not plan.runs_on(capability):
            double.log(
                self.logger,
                "ERROR",
                "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (the engine's compute capabilities "
                f"{', '.join(plan.compute_capabilities)} do not include this device's sm{capability[0]}{capability[1]})",
            )
            return None
        if plan.version_compatible and not self.owner.engine_host_code_allowed:
            double.log(
                self.logger, "ERROR", "Error Code 1: engine host code is not allowed (set engine_host_code_allowed)"
            )
            return None
        return _make_engine(double, plan, self.logger)


def _dims(trt: Any, shape: tuple) -> Any:
    return trt.Dims(tuple(-1 if isinstance(s, str) else int(s) for s in shape))


def _make_engine(double: TrtDouble, plan: _Plan, logger: Any) -> Any:
    """An engine whose I/O is its source graph's (names, directions, types, dims) and whose profile is the one
    its folder's manifest recorded at build time: never read from the specs, so a disagreement shows."""
    trt = double._real
    names = list(plan.io)
    inputs = {n for n, t in plan.io.items() if t.is_input}

    class Impl:
        def get_tensor_name(self, index: int) -> str:
            return names[index]

        def get_tensor_mode(self, name: str) -> Any:
            if name not in names:
                return trt.TensorIOMode.NONE
            return trt.TensorIOMode.INPUT if name in inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(trt.DataType, plan.io[name].dtype)

        def get_tensor_shape(self, name: str) -> Any:
            return _dims(trt, plan.io[name].shape)

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
            if name not in inputs or profile_index != 0:
                return []
            lo, opt, hi = plan.profile[name]
            return [trt.Dims(lo), trt.Dims(opt), trt.Dims(hi)]

        def create_runtime_config(self) -> Any:
            return _make_runtime_config(double)

        def create_engine_inspector(self) -> Any:
            return _make_inspector(double, plan)

        def create_execution_context(self, *args: Any, **kwargs: Any) -> Any:
            config = kwargs.get("runtime_config", kwargs.get("strategy", args[0] if args else None))
            cache = None
            strategy = trt.ExecutionContextAllocationStrategy.STATIC
            if isinstance(config, trt.ExecutionContextAllocationStrategy):
                strategy = config
            elif config is not None:
                cache = double._config_cache.get(id(config))
                strategy = double._config_strategy.get(id(config), strategy)
                double.runtime_settings[plan.graph] = _runtime_settings(trt, config)
            context = _make_context(double, plan, logger, cache, strategy)
            double.contexts.append(context)
            return context

    return spec_double(
        trt.ICudaEngine,
        Impl(),
        num_io_tensors=len(names),
        num_optimization_profiles=1,
        name=plan.graph,
        device_memory_size_v2=scratch_bytes(plan),
    )


def scratch_bytes(plan: _Plan | GraphSpec) -> int:
    """The double's scratch (activation) size of an engine: 1 MiB per I/O tensor, made up but distinct per graph,
    so a test can tell one block per context from one shared block."""
    if isinstance(plan, _Plan):
        return 2**20 * len(plan.io)
    return 2**20 * len(plan.inputs + plan.outputs)


def _runtime_settings(trt: Any, config: Any) -> dict[str, str]:
    """The strategies a runtime config carries, as TensorRT reads them: a property never set has TensorRT's
    default; a value of another type is refused, as the real property's setter refuses it."""
    found = {}
    for prop, enum, default in (
        ("dynamic_shapes_kernel_specialization_strategy", trt.DynamicShapesKernelSpecializationStrategy, "LAZY"),
        ("cuda_graph_strategy", trt.CudaGraphStrategy, "DISABLED"),
    ):
        value = getattr(config, prop)
        if isinstance(value, mock.NonCallableMock):
            found[prop] = default
        elif isinstance(value, enum):
            found[prop] = value.name
        else:
            raise TypeError(f"IRuntimeConfig.{prop} must be a {enum.__name__}, got {value!r}")
    return found


def _make_inspector(double: TrtDouble, plan: _Plan) -> Any:
    """Layer information as TensorRT's JSON format names it: one "layer" per node of the source graph."""
    trt = double._real

    class Impl:
        def get_engine_information(self, format: Any) -> str:
            import onnx

            if format != trt.LayerInformationFormat.JSON:
                return "\n".join(n.name for n in onnx.load(str(plan.onnx), load_external_data=False).graph.node)
            nodes = onnx.load(str(plan.onnx), load_external_data=False).graph.node
            layers = [{"Name": n.name, "LayerType": n.op_type} for n in nodes]
            return json.dumps({"Layers": layers, "Bindings": list(plan.io)})

    return spec_double(trt.EngineInspector, Impl())


#: Salts of :attr:`TrtDouble.salted_cache_bytes` serialisations, unique in the process.
_SALTS = itertools.count(1)


class _CacheState:
    """What a runtime cache holds: the shapes execution specialised kernels for, per graph."""

    def __init__(self, double: TrtDouble) -> None:
        self.double = double
        self.entries: set[tuple[str, tuple]] = set()


def _make_runtime_config(double: TrtDouble) -> Any:
    trt = double._real
    config: Any = None

    class Impl:
        def create_runtime_cache(self) -> Any:
            return _make_runtime_cache(double)

        def set_runtime_cache(self, cache: Any) -> bool:
            double._config_cache[id(config)] = cache
            return True

        def get_runtime_cache(self) -> Any:
            return double._config_cache.get(id(config))

        def set_execution_context_allocation_strategy(self, strategy: Any = None) -> None:
            double._config_strategy[id(config)] = strategy

        def get_execution_context_allocation_strategy(self) -> Any:
            return double._config_strategy.get(id(config), trt.ExecutionContextAllocationStrategy.STATIC)

    config = spec_double(trt.IRuntimeConfig, Impl())
    return config


def _make_runtime_cache(double: TrtDouble) -> Any:
    trt = double._real
    state = _CacheState(double)

    class Impl:
        def serialize(self) -> bytes:
            entries = sorted([g, [list(s) for s in shapes]] for g, shapes in state.entries)
            blob = {"format": _CACHE_FORMAT, "gpu": double.gpu.names[double.gpu.device()], "entries": entries}
            if double.salted_cache_bytes:  # process-wide: a new double must not repeat an earlier salt
                blob["salt"] = next(_SALTS)
            return json.dumps(blob).encode()

        def deserialize(self, blob: Any) -> bool:
            if not double.gpu.has_context():
                return False  # "A current CUDA context must be present"
            try:
                data = json.loads(bytes(memoryview(blob)))
            except (ValueError, UnicodeDecodeError):
                return False
            if data.get("format") != _CACHE_FORMAT or data.get("gpu") != double.gpu.names[double.gpu.device()]:
                return False
            state.entries |= {(g, tuple(tuple(s) for s in shapes)) for g, shapes in data["entries"]}
            return True

        def reset(self) -> None:
            state.entries.clear()

    cache = spec_double(trt.IRuntimeCache, Impl())
    double._cache_state[id(cache)] = state
    return cache


def _make_context(double: TrtDouble, plan: _Plan, logger: Any, cache: Any, strategy: Any) -> Any:
    """A context; ``STATIC`` ones reserve their scratch on the fake GPU now (freed with the context), as TensorRT
    does, ``USER_MANAGED`` ones refuse to run until :meth:`set_device_memory` gave them enough."""
    trt = double._real
    gpu = double.gpu
    shapes: dict[str, tuple[int, ...]] = {}
    addresses: dict[str, int] = {}
    user_managed = strategy == trt.ExecutionContextAllocationStrategy.USER_MANAGED
    scratch: dict[str, int] = {}
    need = scratch_bytes(plan)
    input_names = [n for n, t in plan.io.items() if t.is_input]
    output_names = [n for n, t in plan.io.items() if not t.is_input]
    profile = plan.profile

    def all_shapes_set() -> bool:
        return all(n in shapes for n in input_names)

    class Impl:
        def set_input_shape(self, name: str, shape: Any) -> bool:
            if name not in input_names:
                double.log(logger, "ERROR", f"setInputShape: {name} is not an input tensor")
                return False
            shape = tuple(int(s) for s in shape)
            lo, _, hi = profile[name]
            if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi, strict=True)):
                double.log(
                    logger,
                    "ERROR",
                    f"IExecutionContext::setInputShape: {name} {shape} is outside the profile [{lo}, {hi}]",
                )
                return False
            shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> Any:
            if name in input_names:
                return trt.Dims(shapes[name]) if name in shapes else _dims(trt, plan.io[name].shape)
            if not all_shapes_set():
                return _dims(trt, plan.io[name].shape)
            return trt.Dims(plan.output_shape(name, shapes))

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in plan.io:
                double.log(logger, "ERROR", f"setTensorAddress: {name} is not a tensor of the engine")
                return False
            if gpu.owner(int(memory), 0) and int(memory) % 256:  # device memory (not a torch double's CPU tensor)
                double.log(
                    logger,
                    "ERROR",
                    f"setTensorAddress: tensor {name} address {int(memory):#x} is not aligned to 256 bytes",
                )
                return False
            addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return addresses.get(name, 0)

        def set_device_memory(self, memory: int, size: int) -> None:
            if not user_managed:
                double.log(logger, "ERROR", "setDeviceMemory: the context was not created with USER_MANAGED memory")
                return
            if gpu.owner(int(memory), int(size)) and int(memory) % 256:
                double.log(logger, "ERROR", f"setDeviceMemory: address {int(memory):#x} is not aligned to 256 bytes")
                return
            if int(size) < need:
                double.log(logger, "ERROR", f"setDeviceMemory: {int(size)} bytes, the engine needs {need}")
                return
            scratch["address"], scratch["size"] = int(memory), int(size)

        def execute_async_v3(self, stream_handle: int) -> bool:
            missing = [n for n in plan.io if n not in addresses]
            if not all_shapes_set() or missing:
                double.log(logger, "ERROR", f"enqueueV3: missing input shapes or addresses {missing}")
                return False
            if user_managed and not scratch:
                double.log(logger, "ERROR", "enqueueV3: no device memory set for a USER_MANAGED context")
                return False
            if int(stream_handle) == 0:
                double.log(logger, "WARNING", "Using default stream in enqueueV3() may lead to performance issues")
            stream = gpu.stream(int(stream_handle))
            feeds_at = {n: (addresses[n], shapes[n], _NUMPY[plan.io[n].dtype]) for n in input_names}
            outs_at = {n: (addresses[n], plan.output_shape(n, shapes), _NUMPY[plan.io[n].dtype]) for n in output_names}
            signature = tuple(shapes[n] for n in input_names)

            def run() -> None:
                feeds = {n: gpu.read(ptr, shape, dtype) for n, (ptr, shape, dtype) in feeds_at.items()}
                results = plan.session().run(output_names, feeds)
                for name, value in zip(output_names, results, strict=True):
                    ptr, shape, dtype = outs_at[name]
                    if tuple(value.shape) != shape:
                        raise AssertionError(f"{plan.graph}: {name} computed {value.shape}, bound for {shape}")
                    gpu.write(ptr, np.asarray(value, dtype=dtype))
                del results
                release_host_memory()
                double.specialised.setdefault(plan.graph, set()).add(signature)
                if cache is not None:
                    double._cache_state[id(cache)].entries.add((plan.graph, signature))

            stream.enqueue(f"execute {plan.graph}", run)
            return True

    context = spec_double(trt.IExecutionContext, Impl())
    if not user_managed:
        weakref.finalize(context, gpu.free, gpu.malloc(need))
    return context
