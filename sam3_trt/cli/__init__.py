"""``sam3-trt``: thin click commands over the Python API, one module per command group.

Each command parses its options (declared once in :mod:`.common`), calls its stage's Python API (which checks
every input before long work starts) and prints the result: one JSON line on stdout, progress on stderr.
"""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from . import checks, datasets, engines, export, image, offline, serving, video
from .common import Ui


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sam3-trt")
@click.option("--quiet", "-q", is_flag=True, help="Only print results and errors.")
@click.option("--verbose", "-v", is_flag=True, help="Print extra detail.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """SAM3 on TensorRT: export, build engines, run, check parity."""
    ctx.obj = Ui(quiet=quiet, verbose=verbose)
    route_tensorrt_log(quiet, verbose)


def route_tensorrt_log(quiet: bool, verbose: bool) -> None:
    """TensorRT's messages go to stderr (stdout carries results only): errors with -q, everything with -v."""
    from ..engines.parse import LOG, set_trt_log_level

    set_trt_log_level("ERROR" if quiet else "VERBOSE" if verbose else "WARNING")
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.DEBUG)
        LOG.propagate = False


for _module in (checks, datasets, engines, export, image, offline, serving, video):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
