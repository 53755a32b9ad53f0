"""Backends: run a graph by name with named inputs, get named outputs.

* :class:`OnnxRuntimeBackend`: the exported ONNX graphs (CPU; CUDA/TensorRT execution providers when present).
* :class:`TensorRTBackend`: TensorRT or TensorRT for RTX engines (**needs an NVIDIA GPU; not yet run on
  hardware by this project**).
* :class:`TorchBackend`: the eager sam3 model through the same wrappers the export traced (the reference).

Every backend validates feeds against :mod:`sam3_trt.specs` (names, dtypes, dynamic ranges) before running,
serialises calls with a lock (one processor may be shared by threads), and frees its resources on
``close()`` or when used as a context manager. Outputs of one call may be reused by the next call of the
same graph (TensorRT output buffers are): copy what you keep.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..specs import SPECS, get_spec
from .arrays import to_numpy


class Backend:
    """Base class: spec validation, call counting, locking, context management."""

    name = "base"
    #: True when a run's outputs live in buffers the next run overwrites (callers copy what they keep)
    reuses_outputs = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: graph name -> number of runs (tests use this to prove caching)
        self.calls: dict[str, int] = dict.fromkeys(SPECS, 0)
        #: graph name -> wall seconds of its latest run (``sam3-trt bench`` reads this per stage)
        self.last_seconds: dict[str, float] = {}
        self._closed = False

    def run(self, graph: str, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``graph`` on ``feeds`` (``{input name: array}``) and return ``{output name: array}``."""
        spec = get_spec(graph)
        if self._closed:
            raise Sam3TrtError(f"{self.name} backend is closed; create a new processor")
        sizes = spec.infer_sizes(feeds)
        with self._lock:
            self.calls[graph] += 1
            start = time.perf_counter()
            out = self._run(graph, feeds, sizes)
            self.last_seconds[graph] = time.perf_counter() - start
            return out

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Free sessions, engines and device memory."""
        self._closed = True

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime over an export folder.

    Args:
        folder: Export folder with the three ``.onnx`` files.
        providers: ONNX Runtime execution providers; default: CPU (CUDA/TensorRT EPs are used only when
            passed, or by ``providers="auto"`` when installed).
        threads: Intra-op threads (``None``: ONNX Runtime's default).
        memory_arena: Keep ONNX Runtime's CPU arena (fast repeated calls); ``False`` returns each call's
            buffers (the full-size vision graph peaks at several GB).
        fuse_attention: With the CPU provider only, run attention sites as ONNX Runtime's
            ``MultiHeadAttention`` (flash attention, no score matrix; :mod:`.ort_attention`). The
            export's files are not changed; ``fused_sites`` records how many sites each graph got.
    """

    name = "onnxruntime"

    def __init__(
        self,
        folder: str | Path,
        providers: list[str] | str | None = None,
        threads: int | None = None,
        memory_arena: bool = True,
        fuse_attention: bool = True,
    ) -> None:
        super().__init__()
        import onnxruntime as ort

        self.folder = Path(folder)
        if providers == "auto":
            available = ort.get_available_providers()
            wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
            providers = [p for p in wanted if p in available]
        self.providers = list(providers or ["CPUExecutionProvider"])
        self._opts = ort.SessionOptions()
        self._opts.enable_cpu_mem_arena = memory_arena
        if threads:
            self._opts.intra_op_num_threads = threads
        # a graph edited in memory (attention fusion) is passed as bytes: its weights load from here
        self._opts.add_session_config_entry("session.model_external_initializers_file_folder_path", str(self.folder))
        self._ort = ort
        self._sessions: dict[str, Any] = {}
        self._fuse = fuse_attention and self.providers == ["CPUExecutionProvider"]
        #: graph name -> attention sites run as MultiHeadAttention (0 when not fused)
        self.fused_sites: dict[str, int] = {}

    def session(self, graph: str) -> Any:
        """The graph's session, created on first use (a truncated or corrupt file fails here, by name)."""
        if graph not in self._sessions:
            path = self.folder / SPECS[graph].onnx_file
            if not path.is_file():
                raise Sam3TrtError(f"{path} is missing; re-run `sam3-trt export`")
            try:
                self._sessions[graph] = self._load(graph, path)
            except Exception as exc:  # noqa: BLE001 - ORT raises several types for bad files
                first = str(exc).strip().splitlines()[0][:200]
                raise Sam3TrtError(
                    f"cannot load {path} ({first}); the file is truncated or corrupt: re-run the export"
                ) from None
        return self._sessions[graph]

    def _load(self, graph: str, path: Path) -> Any:
        self.fused_sites[graph] = 0
        if self._fuse:
            import onnx

            from .ort_attention import fuse_attention

            model, fused = fuse_attention(onnx.load(str(path), load_external_data=False))
            if fused:
                session = self._ort.InferenceSession(model.SerializeToString(), self._opts, providers=self.providers)
                self.fused_sites[graph] = fused
                return session
        return self._ort.InferenceSession(str(path), self._opts, providers=self.providers)

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        spec = SPECS[graph]
        inputs = {n: to_numpy(feeds[n]) for n in spec.input_names}
        outs = self.session(graph).run(spec.output_names, inputs)
        return dict(zip(spec.output_names, outs, strict=True))

    def close(self) -> None:
        self._sessions.clear()
        super().close()


class TorchBackend(Backend):
    """The eager sam3 model, through the export wrappers (the parity reference).

    Args:
        model: sam3 image model (:func:`sam3_trt.export.model.load_model`).
        device: Torch device the model is on.
    """

    name = "torch"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        super().__init__()
        from ..export.wrappers import WRAPPERS

        self.device = device
        self.modules = {g: cls(model).eval() for g, cls in WRAPPERS.items()}

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        import torch

        from ..export.patches import cpu_compat

        spec = SPECS[graph]
        args = [
            x.to(self.device)
            if isinstance(x, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            for x in (feeds[n] for n in spec.input_names)
        ]
        with torch.inference_mode(), cpu_compat(self.device):
            outs = self.modules[graph](*args)
        return dict(zip(spec.output_names, outs, strict=True))


_TORCH_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32", "bool": "bool"}


class TensorRTBackend(Backend):
    """TensorRT / TensorRT for RTX engines. **GPU only; not yet run on hardware by this project.**

    One execution context per graph, one CUDA stream, ``execute_async_v3``; shapes set per call from the
    specs; tensors bound by name (``set_tensor_address``); output buffers reused across calls and grown
    when a larger profile shape arrives. Device memory comes from torch CUDA tensors (torch must be
    installed with CUDA). For TensorRT for RTX, the runtime cache (just-in-time kernel specialisation) is
    loaded from and saved to ``runtime_cache.bin`` beside the engines.

    Args:
        folder: Engine folder (checked against this GPU and TensorRT version before anything is loaded).
        manifest: Its manifest.
        device_index: CUDA device.
    """

    name = "tensorrt"
    reuses_outputs = True  # one output buffer per tensor, rebound on every run
    RUNTIME_CACHE = "runtime_cache.bin"

    def __init__(self, folder: str | Path, manifest: Mapping[str, Any], device_index: int = 0) -> None:
        super().__init__()
        from ..device import gpu_info
        from ..engines.parse import load_trt
        from .artifacts import Artifacts, check_engines_runnable

        self.folder = Path(folder)
        check_engines_runnable(Artifacts(self.folder, "engines", dict(manifest)), gpu_info())
        try:
            import torch
        except ImportError:
            raise Sam3TrtError(
                "the TensorRT backend needs torch with CUDA for device memory: pip install torch"
            ) from None
        if not torch.cuda.is_available():
            raise Sam3TrtError("the TensorRT backend needs torch built with CUDA (torch.cuda.is_available() is False)")
        self._torch = torch
        self.flavour = manifest["flavour"]
        self.trt = load_trt(self.flavour)
        self.device = torch.device("cuda", device_index)
        self.stream = torch.cuda.Stream(device=self.device)
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self._runtime_cache = None
        self.contexts: dict[str, Any] = {}
        #: graph name -> engine milliseconds of its latest run (CUDA events on the stream)
        self.last_gpu_ms: dict[str, float] = {}
        self._buffers: dict[tuple[str, str], Any] = {}
        for graph, spec in SPECS.items():
            path = self.folder / spec.engine_file
            if not path.is_file():
                raise Sam3TrtError(f"{path} is missing; rebuild with `make engines`")
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise Sam3TrtError(
                    f"TensorRT could not load {path} (truncated, or built by another TensorRT/GPU); rebuild with `make engines`"
                )
            self.engines[graph] = engine
            self.contexts[graph] = self._create_context(engine)

    def _create_context(self, engine: Any) -> Any:
        if self.flavour != "rtx":
            return engine.create_execution_context()
        config = engine.create_runtime_config()
        if self._runtime_cache is None:
            self._runtime_cache = config.create_runtime_cache()
            cache_file = self.folder / self.RUNTIME_CACHE
            if cache_file.is_file():
                self._runtime_cache.deserialize(cache_file.read_bytes())
        config.set_runtime_cache(self._runtime_cache)
        return engine.create_execution_context(config)

    def _buffer(self, graph: str, name: str, shape: tuple[int, ...], dtype: str) -> Any:
        torch = self._torch
        key = (graph, name)
        buf = self._buffers.get(key)
        numel = int(np.prod(shape))
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=getattr(torch, _TORCH_DTYPES[dtype]), device=self.device)
            self._buffers[key] = buf
        return buf[:numel].view(shape)

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        torch = self._torch
        spec = SPECS[graph]
        ctx = self.contexts[graph]
        keep_alive = []
        with torch.cuda.stream(self.stream):
            for t in spec.inputs:
                x = feeds[t.name]
                tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
                tensor = tensor.to(self.device, non_blocking=True).contiguous()
                shape = tuple(tensor.shape)
                if not ctx.set_input_shape(t.name, shape):
                    raise Sam3TrtError(f"For input: {t.name}, failed to set shape to: {shape}")
                ctx.set_tensor_address(t.name, tensor.data_ptr())
                keep_alive.append(tensor)
            outputs = {}
            for t, shape in zip(spec.outputs, spec.output_shapes(sizes).values(), strict=True):
                engine_shape = tuple(ctx.get_tensor_shape(t.name))
                if engine_shape != shape:
                    raise Sam3TrtError(f"For output: {t.name}, engine shape {engine_shape} differs from spec {shape}")
                out = self._buffer(graph, t.name, shape, t.dtype)
                ctx.set_tensor_address(t.name, out.data_ptr())
                outputs[t.name] = out
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record(self.stream)
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise Sam3TrtError(f"TensorRT execution of {graph} failed (see the TensorRT log above)")
            end.record(self.stream)
        self.stream.synchronize()
        self.last_gpu_ms[graph] = begin.elapsed_time(end)  # engine time only, from CUDA events
        return outputs

    def close(self) -> None:
        if getattr(self, "_runtime_cache", None) is not None:
            data = bytes(self._runtime_cache.serialize())
            try:
                (self.folder / self.RUNTIME_CACHE).write_bytes(data)
            except OSError as exc:  # a read-only engine folder still runs; it just re-specialises next time
                warnings.warn(
                    f"could not save the TensorRT for RTX runtime cache in {self.folder}: {exc}", stacklevel=2
                )
        self.contexts.clear()
        self.engines.clear()
        self._buffers.clear()
        super().close()
