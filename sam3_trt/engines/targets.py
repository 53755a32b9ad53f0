"""GPU names users type -> compute capability and default TensorRT flavour.

RTX-class GPUs (GeForce, RTX PRO) default to TensorRT for RTX, which builds ahead of time on any
machine, even without a GPU. Data-centre and Jetson GPUs default to standard TensorRT, which builds on
the target GPU. ``--flavour`` overrides.
"""

from __future__ import annotations

import dataclasses

from ..device import GpuInfo
from ..errors import Sam3TrtError

#: Compute capabilities TensorRT for RTX 1.x can target (no Hopper: use standard TensorRT there).
RTX_COMPUTE_CAPABILITIES = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")


@dataclasses.dataclass(frozen=True)
class Target:
    """One build target.

    Args:
        name: Folder name under ``engines/`` (``"5090"``, ``"h100"``, ``"sm89"``...).
        sm: Compute capability, ``"sm89"`` style.
        flavour: ``"rtx"`` or ``"tensorrt"``.
        description: GPU family, for messages.
    """

    name: str
    sm: str
    flavour: str
    description: str


_TABLE = (
    ("5090", "sm120", "rtx", "GeForce RTX 5090 (Blackwell)"),
    ("5080", "sm120", "rtx", "GeForce RTX 5080 (Blackwell)"),
    ("rtx-pro-6000", "sm120", "rtx", "RTX PRO 6000 Blackwell"),
    ("4090", "sm89", "rtx", "GeForce RTX 4090 (Ada)"),
    ("4080", "sm89", "rtx", "GeForce RTX 4080 (Ada)"),
    ("rtx6000-ada", "sm89", "rtx", "RTX 6000 Ada"),
    ("3090", "sm86", "rtx", "GeForce RTX 3090 (Ampere)"),
    ("3080", "sm86", "rtx", "GeForce RTX 3080 (Ampere)"),
    ("a100", "sm80", "tensorrt", "A100 (Ampere data centre)"),
    ("a10", "sm86", "tensorrt", "A10 (Ampere data centre)"),
    ("l4", "sm89", "tensorrt", "L4 (Ada data centre)"),
    ("l40s", "sm89", "tensorrt", "L40S (Ada data centre)"),
    ("h100", "sm90", "tensorrt", "H100 (Hopper)"),
    ("h200", "sm90", "tensorrt", "H200 (Hopper)"),
    ("b200", "sm100", "tensorrt", "B200 (Blackwell data centre)"),
    ("t4", "sm75", "tensorrt", "T4 (Turing)"),
    ("orin", "sm87", "tensorrt", "Jetson AGX Orin"),
)

TARGETS: dict[str, Target] = {name: Target(name, sm, flavour, desc) for name, sm, flavour, desc in _TABLE}


def resolve_target(name: str, gpu: GpuInfo | None = None, flavour: str | None = None) -> Target:
    """Target for a GPU name (case-insensitive), ``smXY``, or ``auto`` (the local GPU).

    Args:
        name: ``"5090"``, ``"H100"``, ``"sm89"``, ``"auto"``...
        gpu: Local GPU (needed for ``auto``).
        flavour: Override the table's flavour.

    Raises:
        Sam3TrtError: unknown name, ``auto`` without a GPU, or a flavour that cannot target the GPU.
    """
    key = name.strip().lower().replace("rtx ", "").replace("geforce ", "")
    if key == "auto":
        if gpu is None or not gpu.available:
            reason = gpu.reason if gpu is not None else "not probed"
            raise Sam3TrtError(f"--gpu auto needs a local NVIDIA GPU ({reason}); name a target instead, e.g. GPU=5090")
        sm = gpu.sm or "?"
        gpu_name = gpu.names[0]
        rtx_class = any(word in gpu_name for word in ("GeForce", "RTX")) and sm in RTX_COMPUTE_CAPABILITIES
        target = Target(sm, sm, "rtx" if rtx_class else "tensorrt", gpu_name)
    elif key in TARGETS:
        target = TARGETS[key]
    elif key.startswith("sm") and key[2:].isdigit():
        target = Target(key, key, "rtx" if key in RTX_COMPUTE_CAPABILITIES else "tensorrt", f"compute capability {key}")
    else:
        raise Sam3TrtError(f"unknown GPU {name!r}; use one of {', '.join(TARGETS)}, smXY (e.g. sm89) or auto")
    if flavour is not None:
        if flavour not in ("rtx", "tensorrt"):
            raise Sam3TrtError(f"unknown flavour {flavour!r}; use rtx or tensorrt")
        target = dataclasses.replace(target, flavour=flavour)
    if target.flavour == "rtx" and target.sm not in RTX_COMPUTE_CAPABILITIES:
        raise Sam3TrtError(
            f"TensorRT for RTX cannot target {target.sm} ({target.description}); use --flavour tensorrt on that GPU"
        )
    return target


def rtx_target(compute_capability: str, gpu: GpuInfo | None = None) -> Target:
    """A TensorRT for RTX target for experiments on GPUs its support matrix does not list (``gpu-check``).

    ``current`` builds for the local GPU whatever it is (``ComputeCapability.CURRENT``, so it needs one);
    ``smXY`` is one of :data:`RTX_COMPUTE_CAPABILITIES`, whose plans TensorRT for RTX may or may not run on
    another architecture (Hopper, sm90, is the open case).

    Args:
        compute_capability: ``current`` or ``smXY``.
        gpu: The local GPU (needed for ``current``).

    Raises:
        Sam3TrtError: an unknown value, or ``current`` without a GPU.
    """
    cc = compute_capability.strip().lower()
    if cc == "current":
        if gpu is None or not gpu.available:
            reason = gpu.reason if gpu is not None else "not probed"
            raise Sam3TrtError(f"--rtx-cc current builds for the local GPU and there is none ({reason}); name an smXY")
        return Target(f"rtx-current-{gpu.sm}", "current", "rtx", f"{gpu.names[0]} through ComputeCapability.CURRENT")
    if cc not in RTX_COMPUTE_CAPABILITIES:
        raise Sam3TrtError(
            f"--rtx-cc {compute_capability}: use current or one of {', '.join(RTX_COMPUTE_CAPABILITIES)}"
        )
    return Target(f"rtx-{cc}", cc, "rtx", f"compute capability {cc} (TensorRT for RTX)")
