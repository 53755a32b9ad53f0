"""``sam3-trt doctor``: what is installed and usable here, and why not where it is not."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import warnings
from typing import Any

from ..device import gpu_info

#: (label, import name, distribution name, what it is for)
COMPONENTS: tuple[tuple[str, str, str, str], ...] = (
    (
        "torch",
        "torch",
        "torch",
        "export, eager reference; with CUDA: TensorRT device memory (device_memory='torch', results as CUDA tensors)",
    ),
    ("torchvision", "torchvision", "torchvision", "sam3's roi_align and transforms (eager reference)"),
    ("sam3", "sam3", "sam3", "the upstream model (export, eager reference)"),
    ("onnx", "onnx", "onnx", "graph checks, FP16 pass, calibration"),
    ("onnxruntime", "onnxruntime", "onnxruntime", "CPU backend, parity checks, INT8 calibration"),
    (
        "tensorrt_rtx",
        "tensorrt_rtx",
        "tensorrt_rtx_cu13",
        "TensorRT for RTX: ahead-of-time engine builds (no GPU needed); runs them on RTX GPUs",
    ),
    ("tensorrt", "tensorrt", "tensorrt", "standard TensorRT: builds and runs engines on the target GPU"),
    (
        "cuda-python",
        "cuda.bindings.runtime",
        "cuda-python",
        "GPU discovery; TensorRT device memory without torch (device_memory='cuda-python')",
    ),
    ("pytriton", "pytriton", "nvidia-pytriton", "sam3-trt serve (Triton Inference Server)"),
    ("tritonclient", "tritonclient.grpc", "tritonclient", "sam3-trt client; triton-repo config validation"),
)

# Importing these without a driver can crash or fail; report them as installed without importing.
_NO_IMPORT = {"tensorrt", "tensorrt_rtx"}


def _component(label: str, module: str, dist: str, purpose: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": label, "for": purpose}
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        entry.update(status="missing", detail=f"not installed ({_install_hint(label)})")
        return entry
    try:
        entry["version"] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        entry["version"] = "unknown"
    if module in _NO_IMPORT:
        entry.update(status="installed", detail="installed (not imported: loaded only when used)")
        return entry
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sam3 warns about CUDA autocast at import
            importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - doctor reports, never raises
        entry.update(status="broken", detail=f"import fails: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        return entry
    entry.update(status="ok", detail="importable")
    return entry


def _install_hint(label: str) -> str:
    return {
        "tensorrt_rtx": "pip install 'sam3-trt[rtx]'",
        "tensorrt": "pip install 'sam3-trt[gpu]' on a machine with an NVIDIA GPU",
        "cuda-python": "pip install 'sam3-trt[rtx]'",
        "pytriton": "make serve-install (its own venv: numpy<2, shared libpython)",
        "tritonclient": "make serve-install",
    }.get(label, "make install")


def report() -> dict[str, Any]:
    """Everything ``doctor`` knows, as JSON-ready data."""
    gpu = gpu_info()
    return {
        "components": [_component(*c) for c in COMPONENTS],
        "gpu": gpu.to_dict() | {"sm": gpu.sm},
        "device_memory": _device_memory_choice(gpu.available),
        "serving_python": _serving_python(),
    }


def _serving_python() -> str:
    """Whether this interpreter can run ``serve`` (Triton's Python backend embeds a shared libpython)."""
    import sys
    import sysconfig
    from pathlib import Path

    library = Path(sysconfig.get_config_var("LIBDIR") or "") / (sysconfig.get_config_var("INSTSONAME") or "")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and library.is_file():
        return f"ok: {sys.executable} has a shared libpython ({library}), which Triton's Python backend embeds"
    return f"no: {sys.executable} has no shared libpython; serve from `make serve-install`'s .venv-serve"


def _device_memory_choice(gpu_available: bool) -> str:
    """What ``device_memory="auto"`` would pick for the TensorRT backend (nothing is opened)."""
    from ..runtime.device_memory.torch import torch_cuda_available

    if not gpu_available:
        return "none: no GPU (the TensorRT backend cannot run here)"
    if torch_cuda_available():
        return "torch (CUDA tensors)"
    if importlib.util.find_spec("cuda") is not None:
        return "cuda-python"
    return "none: install cuda-python (pip install 'sam3-trt[rtx]') or torch with CUDA"


def format_report(data: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`report`."""
    lines = []
    for c in data["components"]:
        version = c.get("version", "")
        lines.append(f"{c['name']:<13} {c['status']:<9} {version:<14} {c['detail']}  [{c['for']}]")
    gpu = data["gpu"]
    lines.append(f"{'device memory':<13} {data['device_memory']}  [TensorRT backend, device_memory='auto']")
    lines.append(f"{'serving':<13} {data['serving_python']}  [sam3-trt serve]")
    if gpu["available"]:
        for name, (major, minor) in zip(gpu["names"], gpu["compute_capabilities"], strict=True):
            lines.append(
                f"gpu           ok        sm{major}{minor:<11} {name} (driver {gpu['driver_version']}, via {gpu['source']})"
            )
    else:
        lines.append(
            f"gpu           none                     {gpu['reason']} (via {gpu['source']}): TensorRT engines cannot run here"
        )
    return "\n".join(lines)
