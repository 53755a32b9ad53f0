"""``sam3-trt doctor``: what is installed and usable here, and why not where it is not."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import warnings
from typing import Any

from .device import gpu_info

#: (label, import name, distribution name, what it is for)
COMPONENTS: tuple[tuple[str, str, str, str], ...] = (
    ("torch", "torch", "torch", "export, eager reference (torch backend)"),
    ("torchvision", "torchvision", "torchvision", "sam3's roi_align and transforms (eager reference)"),
    ("sam3", "sam3", "sam3", "the upstream model (export, eager reference)"),
    ("onnx", "onnx", "onnx", "graph checks"),
    ("onnxruntime", "onnxruntime", "onnxruntime", "CPU backend and export parity"),
    ("tensorrt_rtx", "tensorrt_rtx", "tensorrt_rtx_cu13", "TensorRT for RTX: ahead-of-time builds (no GPU needed)"),
    ("tensorrt", "tensorrt", "tensorrt", "TensorRT engines (build and run need a GPU)"),
    ("cuda-python", "cuda.bindings.runtime", "cuda-python", "GPU discovery, device memory without torch"),
    ("pycuda", "pycuda", "pycuda", "optional device memory for torch-free installs"),
)

# Importing these without a driver can crash or fail; report them as installed without importing.
_NO_IMPORT = {"tensorrt", "tensorrt_rtx", "pycuda"}


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
        "pycuda": "optional: pip install pycuda (needs the CUDA toolkit)",
        "cuda-python": "pip install 'sam3-trt[rtx]'",
    }.get(label, "make install")


def report() -> dict[str, Any]:
    """Everything ``doctor`` knows, as JSON-ready data."""
    gpu = gpu_info()
    return {
        "components": [_component(*c) for c in COMPONENTS],
        "gpu": gpu.to_dict() | {"sm": gpu.sm},
    }


def format_report(data: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`report`."""
    lines = []
    for c in data["components"]:
        version = c.get("version", "")
        lines.append(f"{c['name']:<13} {c['status']:<9} {version:<14} {c['detail']}  [{c['for']}]")
    gpu = data["gpu"]
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
