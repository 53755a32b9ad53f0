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
from pathlib import Path
from typing import Any

import numpy as np

from ..specs import ALL_SPECS, GraphSpec
from .apicheck import check_call, spec_double
from .fake_gpu import FakeGpu, release_host_memory

_DTYPE_NAMES = {"float32": "FLOAT", "float16": "HALF", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}
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
    ) -> None:
        self.graph = graph
        self.spec: GraphSpec = ALL_SPECS[graph]
        self.onnx = onnx
        self.version_compatible = version_compatible
        self.compute_capabilities = compute_capabilities
        self.hardware_compatibility = hardware_compatibility
        self._runner = runner

    def runs_on(self, capability: tuple[int, int]) -> bool:
        """Whether TensorRT would load this plan on a device of ``capability`` (``(9, 0)``: sm90)."""
        if self.hardware_compatibility == "ampere_plus":
            return tuple(capability) >= (8, 0)
        return f"sm{capability[0]}{capability[1]}" in self.compute_capabilities

    def session(self) -> Any:
        return self._runner.session(self.graph)


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
        # per runtime-config and runtime-cache double (by id): the cache a config carries, a cache's entries
        self._config_cache: dict[int, Any] = {}
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
    trt = double._real
    spec = plan.spec
    names = [t.name for t in spec.inputs + spec.outputs]
    inputs = {t.name for t in spec.inputs}

    class Impl:
        def get_tensor_name(self, index: int) -> str:
            return names[index]

        def get_tensor_mode(self, name: str) -> Any:
            if name not in names:
                return trt.TensorIOMode.NONE
            return trt.TensorIOMode.INPUT if name in inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(trt.DataType, _DTYPE_NAMES[spec.tensor(name).dtype])

        def get_tensor_shape(self, name: str) -> Any:
            return _dims(trt, spec.tensor(name).shape)

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
            if name not in inputs or profile_index != 0:
                return []
            lo, opt, hi = spec.profile()[name]
            return [trt.Dims(lo), trt.Dims(opt), trt.Dims(hi)]

        def create_runtime_config(self) -> Any:
            return _make_runtime_config(double)

        def create_engine_inspector(self) -> Any:
            return _make_inspector(double, plan)

        def create_execution_context(self, *args: Any, **kwargs: Any) -> Any:
            config = kwargs.get("runtime_config", args[0] if args else None)
            cache = None
            if config is not None and not isinstance(config, trt.ExecutionContextAllocationStrategy):
                cache = double._config_cache.get(id(config))
            context = _make_context(double, plan, logger, cache)
            double.contexts.append(context)
            return context

    return spec_double(trt.ICudaEngine, Impl(), num_io_tensors=len(names), num_optimization_profiles=1, name=plan.graph)


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
            return json.dumps({"Layers": layers, "Bindings": plan.spec.input_names + plan.spec.output_names})

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


def _make_context(double: TrtDouble, plan: _Plan, logger: Any, cache: Any) -> Any:
    trt = double._real
    spec = plan.spec
    gpu = double.gpu
    shapes: dict[str, tuple[int, ...]] = {}
    addresses: dict[str, int] = {}
    input_names = spec.input_names
    profile = spec.profile()

    def sizes() -> dict[str, int] | None:
        if any(n not in shapes for n in input_names):
            return None
        found: dict[str, int] = {}
        for t in spec.inputs:
            for axis, dim in t.dynamic_axes().items():
                found[dim] = shapes[t.name][axis]
        return found

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
                return trt.Dims(shapes[name]) if name in shapes else _dims(trt, spec.tensor(name).shape)
            found = sizes()
            tensor = spec.tensor(name)
            return _dims(trt, tensor.shape) if found is None else trt.Dims(tensor.resolve(found))

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in spec.input_names + spec.output_names:
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

        def execute_async_v3(self, stream_handle: int) -> bool:
            found = sizes()
            missing = [n for n in spec.input_names + spec.output_names if n not in addresses]
            if found is None or missing:
                double.log(logger, "ERROR", f"enqueueV3: missing input shapes or addresses {missing}")
                return False
            if int(stream_handle) == 0:
                double.log(logger, "WARNING", "Using default stream in enqueueV3() may lead to performance issues")
            stream = gpu.stream(int(stream_handle))
            feeds_at = {t.name: (addresses[t.name], shapes[t.name], t.np_dtype) for t in spec.inputs}
            outs_at = {t.name: (addresses[t.name], t.resolve(found), t.np_dtype) for t in spec.outputs}
            signature = tuple(shapes[n] for n in input_names)

            def run() -> None:
                feeds = {n: gpu.read(ptr, shape, dtype) for n, (ptr, shape, dtype) in feeds_at.items()}
                results = plan.session().run(spec.output_names, feeds)
                for name, value in zip(spec.output_names, results, strict=True):
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

    return spec_double(trt.IExecutionContext, Impl())
