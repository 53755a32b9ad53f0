"""Find and check artifact folders: an ONNX export, an engine folder, or a parent of engine folders.

Engine folders (written by the engine stage) carry ``manifest.json`` with ``kind: "engines"``,
``flavour`` (``"rtx"`` or ``"tensorrt"``), ``trt_version`` and ``compute_capabilities`` (``["sm89"]``).
Engines are tied to both; a folder built for another GPU or TensorRT version is refused with a line
that says what was found and how to rebuild, never deserialised blindly.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path
from typing import Any

from ..assets import BPE_FILE
from ..device import GpuInfo
from ..errors import Sam3TrtError
from ..manifest import MANIFEST_FILE, read_manifest

#: Distribution names that carry each flavour's Python module, checked without importing it.
FLAVOUR_DISTS = {
    "rtx": ("tensorrt_rtx_cu13", "tensorrt-rtx-cu13", "tensorrt_rtx", "tensorrt-rtx", "tensorrt_rtx_cu12"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu13", "tensorrt_cu12"),
}


@dataclasses.dataclass(frozen=True)
class Artifacts:
    """A resolved artifact folder.

    Args:
        folder: The folder holding the graphs or engines.
        kind: ``"onnx-export"`` or ``"engines"``.
        manifest: Its manifest.
    """

    folder: Path
    kind: str
    manifest: dict[str, Any]

    @property
    def tokenizer_path(self) -> Path:
        tok = self.manifest.get("tokenizer", {}).get("file", BPE_FILE)
        path = self.folder / tok
        if not path.is_file():
            raise Sam3TrtError(f"{self.folder} has no tokenizer vocabulary {tok}; re-run the export or build")
        return path


def artifact_precision(manifest: dict[str, Any]) -> str:
    """Tolerance column for parity of an export or engine folder (``fp32``, ``tf32``, ``fp16``, ``int8``, ``fp8``)."""
    precision = manifest.get("precision", {})
    return precision.get("parity_column") or precision.get("mode", "fp32")


def installed_trt_version(flavour: str) -> str | None:
    """Version of an installed TensorRT flavour, read from package metadata (nothing is imported)."""
    for dist in FLAVOUR_DISTS[flavour]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def engine_mismatch(manifest: dict[str, Any], gpu: GpuInfo, version: str | None, device_index: int = 0) -> str | None:
    """Why an engine folder cannot run on device ``device_index`` here, or ``None`` if it can.

    Engines need the TensorRT version that built them, except version-compatible ones (standard TensorRT's
    ``--version-compatible``), which run on the same or a newer TensorRT, never an older one.

    Args:
        manifest: The engine folder's manifest.
        gpu: Local GPUs.
        version: Installed version of the folder's flavour (``None``: not installed).
        device_index: The CUDA device the engines would run on.
    """
    flavour = manifest.get("flavour", "?")
    built = manifest.get("trt_version", "?")
    ccs = list(manifest.get("compute_capabilities", []))
    if not gpu.available:
        return f"no usable GPU ({gpu.reason})"
    if not 0 <= device_index < len(gpu.names):
        return f"device_index={device_index}, but this machine has {len(gpu.names)} GPU(s)"
    if version is None:
        return f"built with {flavour} {built}, which is not installed here"
    if version != built:
        if not manifest.get("version_compatible", False):
            return (
                f"built with {flavour} {built}, but {flavour} {version} is installed (engines need the exact version)"
            )
        if _version_key(version) < _version_key(built):
            return (
                f"built version-compatible with {flavour} {built}, but the older {flavour} {version} is installed "
                "(version-compatible engines run on the same or a newer TensorRT)"
            )
    sm = gpu.sm_of(device_index)
    if sm in ccs:
        return None
    if manifest.get("hardware_compatibility") == "ampere_plus" and gpu.compute_capabilities[device_index][0] >= 8:
        return None
    return f"built for {', '.join(ccs) or '?'}, but GPU {device_index} ({gpu.names[device_index]}) is {sm}"


def resolve_artifacts(path: str | Path, gpu: GpuInfo | None = None, device_index: int = 0) -> Artifacts:
    """Resolve ``path`` to an export folder, an engine folder, or the engine sub-folder matching this GPU.

    Args:
        path: Export folder, engine folder, or a parent of engine folders (``engines/``).
        gpu: Local GPU (probed when ``None`` and needed).
        device_index: The CUDA device engines must run on.

    Raises:
        Sam3TrtError: no artifacts there, or no engine folder that runs on this GPU and TensorRT.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise Sam3TrtError(
            f"artifacts folder {folder} does not exist; run `sam3-trt export --out {folder}` (or build engines)"
        )
    if (folder / MANIFEST_FILE).is_file():
        manifest = read_manifest(folder)
        kind = manifest.get("kind")
        if kind not in ("onnx-export", "engines"):
            raise Sam3TrtError(f"{folder} holds {kind!r} artifacts; expected an export or an engine folder")
        return Artifacts(folder, kind, manifest)
    candidates = sorted(p for p in folder.iterdir() if (p / MANIFEST_FILE).is_file())
    engine_dirs = [(p, read_manifest(p)) for p in candidates]
    engine_dirs = [(p, m) for p, m in engine_dirs if m.get("kind") == "engines"]
    if not engine_dirs:
        raise Sam3TrtError(
            f"{folder} has no {MANIFEST_FILE} and no engine folders below it; pass an export or engine folder"
        )
    if gpu is None:
        from ..device import gpu_info

        gpu = gpu_info()
    reasons = []
    for sub, manifest in engine_dirs:
        why = engine_mismatch(manifest, gpu, installed_trt_version(manifest.get("flavour", "tensorrt")), device_index)
        if why is None:
            return Artifacts(sub, "engines", manifest)
        reasons.append(f"{sub.name}: {why}")
    raise Sam3TrtError(
        f"no engine folder in {folder} runs here ({'; '.join(reasons)}); build one with `sam3-trt build --gpu auto --onnx-dir EXPORT --out {folder}`"
    )


def check_engines_runnable(artifacts: Artifacts, gpu: GpuInfo, device_index: int = 0) -> None:
    """Raise unless ``artifacts`` (an engine folder) was built for device ``device_index`` and this TensorRT."""
    manifest = artifacts.manifest
    why = engine_mismatch(manifest, gpu, installed_trt_version(manifest.get("flavour", "tensorrt")), device_index)
    if why is not None:
        raise Sam3TrtError(
            f"engine folder {artifacts.folder} cannot run here: {why}; rebuild with `sam3-trt build --gpu auto "
            "--onnx-dir EXPORT` or run the export folder with --backend onnxruntime"
        )
