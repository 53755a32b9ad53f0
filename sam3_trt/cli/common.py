"""What every command shares: the UI object, error handling, and options declared once.

User errors (:class:`~sam3_trt.errors.Sam3TrtError`) print one line and exit 2, without a traceback;
failed checks (:class:`~sam3_trt.errors.ParityError`) print every failing output and exit 1. Each option
factory takes the help text, since the same option reads differently per command (``--artifacts`` of
``track`` must be a ``--video`` export); names, types and defaults are declared here once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from ..errors import ParityError, Sam3TrtError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

#: ``--backend`` choices of the commands that run a folder (``torch`` is the eager reference, not a folder).
BACKENDS = ("auto", "onnxruntime", "tensorrt")


class Ui:
    """Where progress and results go (``--quiet`` hides progress, ``--verbose`` adds detail)."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose

    def progress(self, msg: str) -> None:
        """A progress line on stderr (stdout carries results only)."""
        if not self.quiet:
            click.echo(msg, err=True)

    def detail(self, msg: str) -> None:
        """A detail line on stderr, with ``--verbose``."""
        if self.verbose and not self.quiet:
            click.echo(msg, err=True)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One ``error:`` line and exit 2 for a user error, exit 1 for a failed check; no traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ParityError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Sam3TrtError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def echo_json(data: Any, indent: int | None = None) -> None:
    """A result as one JSON document on stdout."""
    click.echo(json.dumps(data, indent=indent))


def path_option(*names: str, help: str, required: bool = False, default: Any = None, **kw: Any) -> Decorator:
    """An option holding a path (``click.Path`` as :class:`~pathlib.Path`)."""
    return click.option(*names, type=click.Path(path_type=Path), required=required, default=default, help=help, **kw)


def artifacts_option(help: str = "Export folder or engine folder.") -> Decorator:
    """``--artifacts FOLDER`` (required)."""
    return path_option("--artifacts", help=help, required=True)


def backend_option() -> Decorator:
    """``--backend auto|onnxruntime|tensorrt``."""
    return click.option("--backend", type=click.Choice(list(BACKENDS)), default="auto", show_default=True)


def json_file_option(help: str = "Write the report as JSON.") -> Decorator:
    """``--json FILE`` (as ``json_path``)."""
    return path_option("--json", "json_path", help=help)


def json_flag_option() -> Decorator:
    """``--json`` as a flag (as ``as_json``): print the report as JSON."""
    return click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")


def figure_option(help: str) -> Decorator:
    """``--figure FILE.png``."""
    return path_option("--figure", help=help)


def out_dir_option(help: str, required: bool = True, **kw: Any) -> Decorator:
    """``--out FOLDER`` (as ``out_dir``)."""
    return path_option("--out", "out_dir", help=help, required=required, **kw)


def force_option(help: str) -> Decorator:
    """``--force``: replace what is there."""
    return click.option("--force", is_flag=True, help=help)


def shape_buckets_option(help: str) -> Decorator:
    """``--shape-buckets 1,2,4,8,16|none``: TensorRT for RTX's shape buckets (parse with ``parse_buckets``)."""
    from ..engines.rtx_runtime import DEFAULT_BUCKETS

    return click.option("--shape-buckets", default=",".join(map(str, DEFAULT_BUCKETS)), show_default=True, help=help)


def prompts_option(help: str) -> Decorator:
    """``--prompt TEXT`` (repeatable, as ``prompts``)."""
    return click.option("--prompt", "prompts", multiple=True, help=help)


def boxes_option(help: str = "Box prompt x0,y0,x1,y1[,neg] in pixels of IMAGE (repeatable).") -> Decorator:
    """``--box x0,y0,x1,y1[,neg]`` (repeatable, as ``boxes``)."""
    return click.option("--box", "boxes", multiple=True, help=help)


def points_option(help: str) -> Decorator:
    """``--point x,y[,neg]`` (repeatable, as ``points``): clicks, upstream's ``predict_inst``."""
    return click.option("--point", "points", multiple=True, help=help)


def multimask_option() -> Decorator:
    """``--multimask``: with ``--point``, the three candidate masks instead of one."""
    return click.option("--multimask", is_flag=True, help="With --point: the three candidate masks instead of one.")


def threshold_option(help: str) -> Decorator:
    """``--threshold`` (default 0.5), checked by :func:`sam3_trt.runtime.processor.check_threshold`."""
    return click.option("--threshold", type=float, default=0.5, show_default=True, help=help)


def image_output_option(help: str = "Overlay to write: .png, .jpg or .webp.", required: bool = False) -> Decorator:
    """``--output FILE`` of an overlay image (the suffix picks the format)."""
    return path_option("--output", help=help, required=required)


def max_objects_option(help: str) -> Decorator:
    """``--max-objects N`` (no limit when left out)."""
    return click.option("--max-objects", type=int, default=None, help=help)
