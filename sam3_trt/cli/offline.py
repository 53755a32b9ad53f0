"""``sam3-trt bundle``: the wheels an offline GPU machine needs."""

from __future__ import annotations

from pathlib import Path

import click

from .common import Ui, echo_json, force_option, handle_errors, out_dir_option


@click.command()
@out_dir_option("Bundle folder to write.")
@click.option("--python", "python_version", default="3.12", show_default=True, help="Target Python version.")
@click.option("--platform", default="manylinux_2_28_x86_64", show_default=True, help="Target platform tag.")
@click.option("--part-mb", type=float, default=60.0, show_default=True, help="Split files larger than this (MiB).")
@click.option("--call-mb", type=float, default=60.0, show_default=True, help="Most MiB per callN/ transfer folder.")
@force_option("Replace an existing bundle folder.")
@click.pass_obj
@handle_errors
def bundle(
    ui: Ui, out_dir: Path, python_version: str, platform: str, part_mb: float, call_mb: float, force: bool
) -> None:
    """Wheels an offline GPU machine needs (TensorRT for RTX, sam3, sam3-trt ...), split to fit transfers."""
    from ..offline.bundle import build_bundle

    manifest = build_bundle(out_dir, python_version, platform, part_mb, call_mb, progress=ui.progress, force=force)
    echo_json({"folder": str(out_dir), "calls": manifest["calls"], "files": len(manifest["files"])})


COMMANDS = [bundle]
