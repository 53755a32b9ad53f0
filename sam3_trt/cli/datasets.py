"""``sam3-trt label`` and ``sam3-trt eval``: whole image sets into COCO files, and one run scored against another."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    Ui,
    artifacts_option,
    echo_json,
    figure_option,
    handle_errors,
    json_file_option,
    out_dir_option,
    path_option,
    prompts_option,
    threshold_option,
)


@click.command()
@click.argument("images", type=str)
@prompts_option("Prompt for every image (repeatable; all of an image's prompts run in one decoder batch).")
@path_option("--prompts", "prompts_file", help="Text file of prompts for every image, one per line.")
@path_option(
    "--per-image",
    help='JSONL of per-image prompts and pixel boxes: {"image": NAME, "prompts": [...], "boxes": [[x0,y0,x1,y1], ...]}.',
)
@path_option(
    "--image-root", help="Folder a COCO images file's file_name entries are relative to (default: its folder)."
)
@artifacts_option("Export folder or engine folder (with --backend torch: the export whose weights run eagerly).")
@click.option(
    "--backend",
    type=click.Choice(["auto", "onnxruntime", "tensorrt", "torch"]),
    default="auto",
    show_default=True,
    help="torch: upstream's eager model on the export's weights (the reference run for `eval`).",
)
@threshold_option("Keep detections with score > threshold (0 to 1).")
@click.option(
    "--max-detections",
    type=int,
    default=100,
    show_default=True,
    help="Best detections kept per image, over all its prompts.",
)
@click.option(
    "--batch",
    type=int,
    default=2,
    show_default=True,
    help="Images per vision-encoder run (capped by the graphs' largest batch).",
)
@click.option(
    "--shard-size", type=int, default=64, show_default=True, help="Images per shard (the unit a re-run resumes from)."
)
@click.option("--limit", type=int, default=None, help="Only the first N images (canonical order).")
@click.option(
    "--shard",
    "shard_spec",
    default=None,
    help="i/n: do every n-th shard from the i-th (several machines on one shared --out).",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help="Run on a Ray cluster (Ray Data, a pool of actors): its address, `auto` (the cluster `ray start` made here) or `local`.",
)
@click.option(
    "--actors",
    type=int,
    default=1,
    show_default=True,
    help="With --ray: actors, one processor (and one GPU where there are GPUs) each.",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Decode threads and RLE-encode threads (each).")
@out_dir_option(
    "Run folder: results.json, dataset.json, errors.jsonl, shards/, run.json (re-run the same command to resume)."
)
@click.pass_obj
@handle_errors
def label(
    ui: Ui,
    images: str,
    prompts: tuple[str, ...],
    prompts_file: Path | None,
    per_image: Path | None,
    image_root: Path | None,
    artifacts: Path,
    backend: str,
    threshold: float,
    max_detections: int,
    batch: int,
    shard_size: int,
    limit: int | None,
    shard_spec: str | None,
    ray_address: str | None,
    actors: int,
    workers: int,
    out_dir: Path,
) -> None:
    """Label IMAGES (a folder, a glob, a .txt list or a COCO images .json) with concept prompts into COCO files."""
    from ..datasets.label import LabelSettings, parse_shard
    from ..datasets.label import label as run_label

    settings = LabelSettings(threshold=threshold, max_detections=max_detections, batch=batch, shard_size=shard_size)
    summary = run_label(
        images, out_dir, artifacts, prompts, prompts_file, per_image, image_root, settings, backend,
        limit=limit, shard=parse_shard(shard_spec), workers=max(1, workers), progress=ui.progress, bar=not ui.quiet,
        ray=ray_address, actors=actors,
    )  # fmt: skip
    echo_json(summary)


@click.command(name="eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@path_option("--gt", help="COCO ground truth (images matched by file_name, categories by name = prompt).")
@path_option(
    "--reference", help="Another label run, its detections taken as the truth (e.g. eager FP32 vs FP16 engines)."
)
@json_file_option("Write the report as JSON.")
@path_option("--markdown", help="Write the report as a markdown table.")
@figure_option("Per-prompt AP and cgF1 bars (PNG).")
@click.pass_obj
@handle_errors
def eval_run(
    ui: Ui,
    run_dir: Path,
    gt: Path | None,
    reference: Path | None,
    json_path: Path | None,
    markdown: Path | None,
    figure: Path | None,
) -> None:
    """Score a label run against --gt or --reference: COCO AP (segm, bbox) and cgF1 / IL_MCC / pmF1, per prompt."""
    from ..datasets.evaluate import evaluate, report_figure, report_markdown
    from ..paths import check_output_file, write_json

    check_output_file(json_path, "--json", (".json",))
    check_output_file(markdown, "--markdown", (".md",))
    check_output_file(figure, "--figure", (".png",))
    report = evaluate(run_dir, gt, reference)
    write_json(json_path, report)
    if markdown is not None:
        markdown.write_text(report_markdown(report))
    if figure is not None:
        report_figure(report, figure)
    ui.progress(report_markdown(report).rstrip())
    echo_json({"images": report["images"], **report["overall"]})


COMMANDS = [label, eval_run]
