"""ONNX parser checks for TensorRT flavours, loaded lazily.

TensorRT for RTX (module ``tensorrt_rtx``) parses and builds without a GPU. Standard TensorRT
(module ``tensorrt``) is only touched after :func:`sam3_trt.device.gpu_info` found a GPU: its objects can
segfault the process on a machine without a driver.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from typing import Any

from ..errors import Sam3TrtError

FLAVOURS = {"rtx": "tensorrt_rtx", "tensorrt": "tensorrt"}


def rtx_available() -> bool:
    """Whether TensorRT for RTX's Python module is installed (no import, no GPU needed)."""
    return importlib.util.find_spec("tensorrt_rtx") is not None


def load_trt(flavour: str) -> Any:
    """Import a TensorRT flavour's module, refusing standard TensorRT without a GPU.

    Args:
        flavour: ``"rtx"`` (TensorRT for RTX) or ``"tensorrt"``.
    """
    if flavour not in FLAVOURS:
        raise Sam3TrtError(f"unknown TensorRT flavour {flavour!r}; use one of {sorted(FLAVOURS)}")
    if flavour == "tensorrt":
        from ..device import gpu_info

        info = gpu_info()
        if not info.available:
            raise Sam3TrtError(
                f"standard TensorRT needs an NVIDIA GPU and driver ({info.reason}); use --flavour rtx here"
            )
    try:
        return importlib.import_module(FLAVOURS[flavour])
    except ImportError:
        extra = "rtx" if flavour == "rtx" else "gpu"
        raise Sam3TrtError(f"{FLAVOURS[flavour]} is not installed: pip install 'sam3-trt[{extra}]'") from None


@dataclasses.dataclass(frozen=True)
class ParseReport:
    """Result of parsing one ONNX file.

    Args:
        path: ONNX file.
        flavour: TensorRT flavour.
        version: Its version.
        ok: Parsed with zero errors.
        errors: Parser error descriptions.
        inputs: Network input names, in order.
        outputs: Network output names, in order.
    """

    path: str
    flavour: str
    version: str
    ok: bool
    errors: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def strongly_typed_network(trt: Any, builder: Any) -> Any:
    """A strongly typed network: precision comes from the ONNX graph (the only path in TensorRT 11)."""
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flag)


def parse_onnx(path: str | os.PathLike[str], flavour: str = "rtx") -> ParseReport:
    """Parse ``path`` into a strongly typed network of ``flavour`` and report every parser error.

    Args:
        path: ONNX file (external data next to it).
        flavour: ``"rtx"`` or ``"tensorrt"``.
    """
    trt = load_trt(flavour)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    ok = bool(parser.parse_from_file(os.fspath(path)))
    errors = tuple(str(parser.get_error(i)) for i in range(parser.num_errors))
    return ParseReport(
        path=os.fspath(path),
        flavour=flavour,
        version=str(trt.__version__),
        ok=ok and not errors,
        errors=errors,
        inputs=tuple(network.get_input(i).name for i in range(network.num_inputs)),
        outputs=tuple(network.get_output(i).name for i in range(network.num_outputs)),
    )
