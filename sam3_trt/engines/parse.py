"""ONNX parser checks for TensorRT flavours, loaded lazily.

TensorRT for RTX (module ``tensorrt_rtx``) parses and builds without a GPU. Standard TensorRT
(module ``tensorrt``) is only touched after :func:`sam3_trt.device.gpu_info` found a GPU: its objects can
segfault the process on a machine without a driver.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import importlib.util
import logging
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


#: TensorRT's messages go to this logger (stderr through the CLI's handler), never to stdout.
LOG = logging.getLogger("sam3_trt.tensorrt")
#: ``sam3-trt -q`` / default / ``-v``: the least severe TensorRT message shown.
LOG_LEVELS = {"quiet": "ERROR", "default": "WARNING", "verbose": "VERBOSE"}
_default_level = "WARNING"


def set_trt_log_level(level: str) -> None:
    """Least severe TensorRT message for loggers made from now on (``"ERROR"``, ``"WARNING"``, ``"INFO"``, ``"VERBOSE"``)."""
    global _default_level
    if level not in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"):
        raise ValueError(f"unknown TensorRT log level {level!r}")
    _default_level = level


def make_logger(trt: Any, level: str | None = None) -> Any:
    """A ``trt.ILogger`` that sends TensorRT's messages to Python logging and keeps the last errors.

    Errors become part of our own one-line messages (``logger.last_error()``), so a failed deserialisation
    or execution says why without "see the log above".

    Args:
        trt: The TensorRT flavour's module.
        level: Least severe message kept (default: :func:`set_trt_log_level`'s, ``WARNING``).
    """
    severity = trt.ILogger.Severity
    threshold = getattr(severity, level or _default_level)
    to_python = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=8)

        def log(self, sev: Any, msg: str) -> None:
            if sev <= severity.ERROR:
                self.errors.append(msg)
            if sev <= threshold:
                LOG.log(to_python.get(sev, logging.INFO), "[TensorRT] %s", msg)

        def last_error(self) -> str:
            """The latest TensorRT error message (``""`` when none), cleared after reading."""
            msg = self.errors[-1] if self.errors else ""
            self.errors.clear()
            return msg

    return _Logger()


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
    logger = make_logger(trt, "ERROR")
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
