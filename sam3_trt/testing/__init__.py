"""Doubles of TensorRT and CUDA, so CI executes the TensorRT runtime path on a machine without a GPU.

They check **API use and data plumbing**, never kernels, numerics or speed:

* :mod:`.trt_double`: autospecs of the installed ``tensorrt_rtx`` runtime classes (every call bound to a
  documented overload), whose engines run their source ONNX graph with ONNX Runtime on the bound memory;
* :mod:`.cuda_double`: autospec of ``cuda.bindings.runtime`` (cuda-python) over host memory;
* :mod:`.torch_double`: the ``torch.cuda`` streams and events the torch memory layer uses;
* :mod:`.fake_gpu`: the host-memory GPU behind them, with streams that run queued work only when it is
  waited for, so a missing event or synchronisation gives wrong data, as on a GPU.

Only what a GPU can show (kernels, FP16/TF32 numerics, speed, real memory limits) is left to a GPU run.
Use::

    with gpu_doubles(engine_folder, memory="cuda-python") as gpu:
        with Sam3Processor(engine_folder, backend="tensorrt") as proc:
            ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from .cuda_double import CudaRuntimeDouble
from .fake_gpu import FakeGpu
from .trt_double import TrtDouble

__all__ = ["CudaRuntimeDouble", "FakeGpu", "GpuDoubles", "TrtDouble", "gpu_doubles"]


def _cpu() -> object:
    import torch

    return torch.device("cpu")


class GpuDoubles:
    """What :func:`gpu_doubles` installed: the fake GPU and each double (for assertions)."""

    def __init__(self, gpu: FakeGpu, cudart: CudaRuntimeDouble, trt: TrtDouble, torch_cuda: object | None) -> None:
        self.gpu = gpu
        self.cudart = cudart
        self.trt = trt
        self.torch_cuda = torch_cuda


@contextlib.contextmanager
def gpu_doubles(
    engine_folder: str | Path | None,
    export_folder: str | Path | None = None,
    memory: str = "torch",
    gpu: FakeGpu | None = None,
) -> Iterator[GpuDoubles]:
    """Install the doubles for the block: GPU discovery, device memory and TensorRT all act on one fake GPU.

    Args:
        engine_folder: Engine folder whose plans the TensorRT double recognises (``sam3-trt build`` output);
            ``None``: none yet (register folders later with ``doubles.trt.register_folder``).
        export_folder: The export it was built from (default: the manifest's).
        memory: ``"torch"`` (torch.cuda double available) or ``"cuda-python"`` (torch reports no CUDA, as a
            CPU-only torch or no torch would; the cuda-python layer is what ``auto`` picks).
        gpu: The fake GPU (default: one RTX 5090-like device, sm120, as the tiny CI engines target).
    """
    from ..runtime.backends import tensorrt as trt_backend
    from ..runtime.device_memory import torch as torch_memory

    gpu = gpu or FakeGpu()
    cudart = CudaRuntimeDouble(gpu)
    trt = TrtDouble(gpu)
    if engine_folder is not None:
        trt.register_folder(engine_folder, export_folder)
    torch_cuda = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("sam3_trt.device.cudart", lambda: cudart))
        stack.enter_context(mock.patch.object(trt_backend, "load_trt", lambda flavour: trt))
        if memory == "torch":
            from .torch_double import TorchCudaDouble

            torch_cuda = TorchCudaDouble(gpu)
            stack.enter_context(mock.patch.object(torch_memory, "cuda_api", lambda: torch_cuda))
            stack.enter_context(mock.patch.object(torch_memory, "torch_device", lambda index: _cpu()))
        elif memory == "cuda-python":
            stack.enter_context(mock.patch.object(torch_memory, "torch_cuda_available", lambda: False))
        else:
            raise ValueError(f"memory={memory!r}: use 'torch' or 'cuda-python'")
        yield GpuDoubles(gpu, cudart, trt, torch_cuda)
