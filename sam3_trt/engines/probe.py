"""Can TensorRT for RTX build for a compute capability here? Asked in a child process.

TensorRT for RTX's support matrix lists compute capabilities 7.5, 8.6, 8.9 and 12.x; on a GPU it does not
list (Hopper, sm90) building for ``ComputeCapability.CURRENT`` may fail cleanly, or abort the whole process
(earlier TensorRT releases did on unsupported targets: NVIDIA/TensorRT#2332). ``gpu-check`` must report that
outcome, not die of it, so the question is asked by building a one-layer network in a child process
(``python -m sam3_trt.engines.probe smXY|current``) and reading how the child ended.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

#: What the child prints on success (its last line).
OK_LINE = "sam3-trt probe: built"


def probe_build(compute_capability: str, timeout: float = 300.0) -> dict[str, Any]:
    """Build a one-layer TensorRT for RTX network for ``compute_capability`` in a child process.

    Args:
        compute_capability: ``current`` (the local GPU) or ``smXY``.
        timeout: Seconds before the child is killed.

    Returns:
        ``{"compute_capability", "built": bool, "exit": "0" | "exit N" | "SIGABRT" | "timeout", "output": the
        child's last 2,000 characters}``.
    """
    command = [sys.executable, "-m", "sam3_trt.engines.probe", compute_capability]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"compute_capability": compute_capability, "built": False, "exit": "timeout", "output": ""}
    output = (proc.stdout + proc.stderr)[-2000:]
    if proc.returncode < 0:
        try:
            how = signal.Signals(-proc.returncode).name
        except ValueError:
            how = f"signal {-proc.returncode}"
    else:
        how = "0" if proc.returncode == 0 else f"exit {proc.returncode}"
    built = proc.returncode == 0 and OK_LINE in proc.stdout
    return {"compute_capability": compute_capability, "built": built, "exit": how, "output": output}


def _build(compute_capability: str) -> int:
    from .parse import load_trt, make_logger, strongly_typed_network

    trt = load_trt("rtx")
    logger = make_logger(trt, "ERROR")
    builder = trt.Builder(logger)
    network = strongly_typed_network(trt, builder)
    x = network.add_input("x", trt.float32, (1, 8))
    network.mark_output(network.add_identity(x).get_output(0))
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    if not config.set_compute_capability(getattr(trt.ComputeCapability, compute_capability.upper()), 0):
        print(f"sam3-trt probe: TensorRT for RTX refused compute capability {compute_capability}", file=sys.stderr)
        return 3
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        print(f"sam3-trt probe: no engine ({logger.last_error() or 'no message from TensorRT'})", file=sys.stderr)
        return 4
    print(f"{OK_LINE} {compute_capability} ({plan.nbytes} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(_build(sys.argv[1]))
