"""``sam3-trt export``: sam3 to ONNX graphs, checked against eager on every run."""

from __future__ import annotations

from pathlib import Path

import click

from .common import Ui, force_option, handle_errors, out_dir_option, path_option


@click.command()
@click.option(
    "--variant",
    type=click.Choice(["full", "tiny"]),
    default="full",
    show_default=True,
    help="full: the real sam3 architecture; tiny: same classes, reduced, for tests.",
)
@path_option("--checkpoint", help="sam3.pt (or .safetensors) in the official layout.")
@click.option(
    "--from-hf", is_flag=True, help="Download facebook/sam3 from the Hugging Face hub (gated, needs network)."
)
@click.option("--random-weights", is_flag=True, help="Deterministic random weights (no checkpoint needed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-weights.")
@click.option("--allow-missing", is_flag=True, help="Accept a checkpoint with missing keys (they keep random values).")
@out_dir_option("Export folder to write.")
@click.option("--simplify", is_flag=True, help="Simplify graphs with onnxslim (parity is checked after).")
@click.option("--no-parity", is_flag=True, help="Skip parity against eager (not recommended).")
@click.option("--no-rtx-parse", is_flag=True, help="Skip the TensorRT for RTX parser check.")
@click.option(
    "--vision-batch",
    "vision_batches",
    type=int,
    multiple=True,
    default=(1,),
    show_default=True,
    help="Image batch sizes to check vision parity at (repeatable).",
)
@force_option("Replace an existing export in --out.")
@click.option(
    "--video",
    is_flag=True,
    help="Also export the video graphs (tracker.* and sam2_convs weights of the same checkpoint).",
)
@click.pass_obj
@handle_errors
def export(
    ui: Ui,
    variant: str,
    checkpoint: Path | None,
    from_hf: bool,
    random_weights: bool,
    seed: int,
    allow_missing: bool,
    out_dir: Path,
    simplify: bool,
    no_parity: bool,
    no_rtx_parse: bool,
    vision_batches: tuple[int, ...],
    force: bool,
    video: bool,
) -> None:
    """Export sam3 to vision_encoder.onnx, text_encoder.onnx and decoder.onnx, with parity checks.

    With --video, also the video graphs (video_vision_encoder, tracker_memory_attention, tracker_mask_head,
    tracker_memory_encoder), each checked against upstream.

    --video also exports the click head (interactive_mask_head) that predict_inst, serve --clicks and
    triton-repo --clicks run.
    """
    from ..export.exporter import ExportOptions, export_from_weights, summary

    options = ExportOptions(
        simplify=simplify, parity=not no_parity, rtx_parse=not no_rtx_parse, vision_batches=vision_batches, force=force
    )
    weights = dict(variant=variant, checkpoint=checkpoint, from_hf=from_hf, random_weights=random_weights, seed=seed)
    manifest = export_from_weights(out_dir, options, allow_missing=allow_missing, video=video, progress=ui.progress,
                                   **weights)  # fmt: skip
    ui.progress(f"wrote {out_dir} (manifest.json holds specs, sha256s, tool versions, weights origin, parity)")
    click.echo(summary(manifest))


COMMANDS = [export]
