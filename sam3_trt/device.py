"""GPU discovery that never touches TensorRT and never crashes on a machine without a driver.

``tensorrt.Runtime()`` without a CUDA driver returns a dead object that can segfault the process, so
every TensorRT path asks :func:`gpu_info` first. Sources, in order: ``cuda-python`` (``cudaGetDeviceCount``
returns an error code instead of raising), torch's CUDA, ``nvidia-smi``.

:func:`cudart` is the one place that imports ``cuda.bindings.runtime``: GPU discovery and the cuda-python
device-memory layer both call it (and the CI doubles in :mod:`sam3_trt.testing` replace it).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from typing import Any


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """What is known about the local GPUs.

    Args:
        available: At least one usable CUDA device.
        names: Device names.
        compute_capabilities: ``(major, minor)`` per device.
        driver_version: CUDA driver API version (e.g. ``13000``), when known.
        runtime_version: CUDA runtime version of the binding used, when known.
        source: Which probe answered.
        reason: Why no GPU is usable (when ``available`` is false).
    """

    available: bool
    names: tuple[str, ...] = ()
    compute_capabilities: tuple[tuple[int, int], ...] = ()
    driver_version: int | None = None
    runtime_version: int | None = None
    source: str = ""
    reason: str = ""

    @property
    def sm(self) -> str | None:
        """``"sm89"``-style name of device 0's compute capability."""
        return self.sm_of(0)

    def sm_of(self, index: int) -> str | None:
        """``"sm89"``-style name of device ``index``'s compute capability (``None`` when unknown)."""
        if not 0 <= index < len(self.compute_capabilities):
            return None
        major, minor = self.compute_capabilities[index]
        return f"sm{major}{minor}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cudart() -> Any:
    """``cuda.bindings.runtime`` (cuda-python's CUDA runtime API); ``ImportError`` when not installed."""
    from cuda.bindings import runtime

    return runtime


def _from_cuda_python() -> GpuInfo | None:
    try:
        rt = cudart()
    except ImportError:
        return None
    err, count = rt.cudaGetDeviceCount()
    _, driver = rt.cudaDriverGetVersion()
    _, runtime = rt.cudaRuntimeGetVersion()
    if err != rt.cudaError_t.cudaSuccess or not count:
        reason = f"cudaGetDeviceCount: {err.name}" if err != rt.cudaError_t.cudaSuccess else "no CUDA device"
        return GpuInfo(
            False, driver_version=driver or None, runtime_version=runtime, source="cuda-python", reason=reason
        )
    names, ccs = [], []
    for i in range(count):
        err, props = rt.cudaGetDeviceProperties(i)
        if err != rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"cudaGetDeviceProperties({i}) failed: {err.name}")
        names.append(props.name.decode(errors="replace").rstrip("\x00"))
        ccs.append((int(props.major), int(props.minor)))
    return GpuInfo(True, tuple(names), tuple(ccs), driver, runtime, "cuda-python")


def _from_torch() -> GpuInfo | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return GpuInfo(False, source="torch", reason="torch.cuda.is_available() is False")
    count = torch.cuda.device_count()
    names = tuple(torch.cuda.get_device_name(i) for i in range(count))
    ccs = tuple(torch.cuda.get_device_capability(i) for i in range(count))
    return GpuInfo(True, names, ccs, source="torch")


def _from_nvidia_smi() -> GpuInfo:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return GpuInfo(False, source="nvidia-smi", reason="no cuda-python, no CUDA torch and no nvidia-smi")
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return GpuInfo(False, source="nvidia-smi", reason=f"nvidia-smi failed: {exc}")
    rows = [r.split(",") for r in out.strip().splitlines() if r.strip()]
    if not rows:
        return GpuInfo(False, source="nvidia-smi", reason="nvidia-smi lists no GPU")
    names = tuple(r[0].strip() for r in rows)
    ccs = tuple(tuple(int(x) for x in r[1].strip().split(".")) for r in rows)
    return GpuInfo(True, names, ccs, source="nvidia-smi")  # type: ignore[arg-type]


def gpu_info() -> GpuInfo:
    """Probe the local GPUs without loading TensorRT (safe on machines with no driver)."""
    answers = []
    for probe in (_from_cuda_python, _from_torch):  # torch is imported only when cuda-python found no GPU
        info = probe()
        if info is not None and info.available:
            return info
        answers.append(info)
    smi = _from_nvidia_smi()
    if smi.available:
        return smi
    # no GPU: report the most specific reason (cuda-python's error code first)
    return next((a for a in answers if a is not None), smi)
