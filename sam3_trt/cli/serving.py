"""``sam3-trt serve``, ``client``, ``triton-repo``: sam3 on Triton Inference Server, and a client for it."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .common import (
    Ui,
    artifacts_option,
    backend_option,
    boxes_option,
    echo_json,
    force_option,
    handle_errors,
    image_output_option,
    json_file_option,
    multimask_option,
    out_dir_option,
    path_option,
    points_option,
    prompts_option,
    threshold_option,
)


@click.command()
@artifacts_option()
@backend_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True, help="Prometheus metrics (/metrics).")
@click.option("--instances", type=int, default=1, show_default=True, help="Model instances (spread over the GPUs).")
@click.option("--max-batch", type=int, default=None, help="Requests the dynamic batcher groups [vision graph's B max].")
@click.option("--max-queue-delay-us", type=int, default=2000, show_default=True, help="Batcher wait to fill a batch.")
@click.option("--max-image-pixels", type=int, default=None, help="Largest image (width x height) [4096x4096].")
@click.option("--max-prompts", type=int, default=None, help="Text prompts per request [64].")
@click.option("--max-detections", type=int, default=None,
              help="Detections per request, the best scores, chosen before masks reach full size [100].")  # fmt: skip
@click.option("--max-bitmask-mb", type=int, default=None,
              help="Largest bitmask response a request may ask for (detections x H x W bytes) [256].")  # fmt: skip
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads per instance [CPUs / instances].")
@click.option("--exit-timeout", type=int, default=30, show_default=True,
              help="On SIGTERM/Ctrl-C, seconds in-flight requests get to finish.")  # fmt: skip
@path_option("--triton-log", help="tritonserver's log file [<temp>/sam3-trt-serve-<http port>.log].")
@click.option("--access-token", envvar="SAM3TRT_ACCESS_TOKEN", default=None, show_envvar=True,
              help="Token of Triton's restricted APIs (statistics, model repository, ...), sent as the "
              "triton-access-token header; prefer the environment variable (process lists show options) "
              "[a random one: those APIs stay closed].")  # fmt: skip
@click.option("--warm-up/--no-warm-up", default=True, show_default=True,
              help="Run the largest batch before 'ready', so memory does not grow under load.")  # fmt: skip
@click.option(
    "--clicks",
    is_flag=True,
    default=False,
    help="Also answer clicks (points, point_labels): needs an export made with --video, or its engines.",
)
@click.pass_obj
@handle_errors
def serve(
    ui: Ui,
    artifacts: Path,
    backend: str,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    instances: int,
    max_batch: int | None,
    max_queue_delay_us: int,
    max_image_pixels: int | None,
    max_prompts: int | None,
    max_detections: int | None,
    max_bitmask_mb: int | None,
    threads: int | None,
    exit_timeout: int,
    triton_log: Path | None,
    warm_up: bool,
    clicks: bool,
    access_token: str | None,
) -> None:
    """Serve the sam3 model on Triton Inference Server (PyTriton) until Ctrl-C or SIGTERM.

    Prints one JSON line with the endpoints once the model is ready.
    """
    from ..paths import check_output_file
    from ..serving.handler import ServeLimits
    from ..serving.server import ServeOptions, check_serving_python
    from ..serving.server import serve as run_serve

    limits = ServeLimits()
    limits = dataclasses.replace(
        limits,
        max_image_pixels=limits.max_image_pixels if max_image_pixels is None else max_image_pixels,
        max_prompts=limits.max_prompts if max_prompts is None else max_prompts,
        max_detections=limits.max_detections if max_detections is None else max_detections,
        max_bitmask_mb=limits.max_bitmask_mb if max_bitmask_mb is None else max_bitmask_mb,
    )
    options = ServeOptions(
        artifacts=artifacts, backend=backend, host=host, http_port=http_port, grpc_port=grpc_port,
        metrics_port=metrics_port, instances=instances,
        max_batch=ServeOptions.max_batch if max_batch is None else max_batch, max_queue_delay_us=max_queue_delay_us,
        limits=limits, threads=threads, exit_timeout_s=exit_timeout, triton_log=triton_log, warm_up=warm_up,
        clicks=clicks, access_token=access_token or None,
    ).check()  # fmt: skip
    check_output_file(options.log_path, "--triton-log")
    check_serving_python()
    ui.progress(f"serve: loading {instances} instance(s) of {artifacts}; Triton's log: {options.log_path}")

    # tritonserver and PyTriton print to stdout (NVML notices, log lines): send all of it to stderr so stdout
    # carries only the ready line, which scripts wait for
    sys.stdout.flush()
    stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def ready(endpoints: dict[str, Any]) -> None:
        stdout.write(json.dumps({"ready": True, **endpoints}) + "\n")
        stdout.flush()

    try:
        run_serve(options, ready=ready)
    finally:
        stdout.close()
    ui.progress("serve: stopped")


@click.command()
@click.argument("url")
@click.argument("image", type=click.Path(path_type=Path))
@prompts_option("Text prompt (repeatable; one decoder batch on the server).")
@boxes_option()
@threshold_option("Keep detections scoring above it.")
@click.option("--mask-format", type=click.Choice(["rle", "bitmask"]), default="rle", show_default=True)
@image_output_option()
@json_file_option("Detections JSON (RLE masks).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Network timeout in seconds.")
@points_option("Click x,y[,neg] in pixels of IMAGE (repeatable; a server started with --clicks; no --prompt/--box).")
@multimask_option()
@click.pass_obj
@handle_errors
def client(
    ui: Ui,
    url: str,
    image: Path,
    prompts: tuple[str, ...],
    boxes: tuple[str, ...],
    threshold: float,
    mask_format: str,
    output: Path | None,
    json_path: Path | None,
    timeout: float,
    points: tuple[str, ...],
    multimask: bool,
) -> None:
    """Send IMAGE with prompts to a sam3 server at URL (http://host:port or grpc://host:port).

    Or clicks (--point) to a server started with --clicks.
    """
    from ..serving.client import query_server

    echo_json(
        query_server(url, image, prompts, boxes, threshold, mask_format, output, json_path, timeout, points, multimask)
    )


@click.command("triton-repo")
@artifacts_option("Engine folder (tensorrt_plan models; standard TensorRT) or export folder (onnxruntime_onnx).")
@out_dir_option("Model repository to write.")
@click.option("--instances", type=int, default=1, show_default=True, help="Instances of each model.")
@click.option("--gpus", default="", help="GPU ids for the graph models, e.g. 0,1 (default: every GPU).")
@click.option("--cpu", is_flag=True, help="Graph models on the CPU (export folders only): try it without a GPU.")
@click.option("--max-batch", type=int, default=None, help="The sam3 model's dynamic batch [vision graph's B max].")
@click.option(
    "--clicks", is_flag=True, help="Also answer clicks (points), as serve --clicks: an export made with --video."
)
@force_option("Replace an existing repository in --out.")
@click.pass_obj
@handle_errors
def triton_repo(
    ui: Ui,
    artifacts: Path,
    out_dir: Path,
    instances: int,
    gpus: str,
    cpu: bool,
    max_batch: int | None,
    clicks: bool,
    force: bool,
) -> None:
    """Write a Triton model repository: the three graphs plus a Python-backend sam3 model (BLS)."""
    from ..serving.triton_repo import RepoOptions, parse_gpu_ids, write_repo

    options = RepoOptions(
        artifacts=artifacts, out=out_dir, instances=instances, gpus=parse_gpu_ids(gpus), cpu=cpu,
        max_batch=RepoOptions.max_batch if max_batch is None else max_batch, force=force, clicks=clicks,
    )  # fmt: skip
    summary = write_repo(options)
    validation = summary["validation"]
    if validation["status"] != "passed":
        ui.progress(f"warning: configs not checked against Triton's schema: {validation['reason']}")
    echo_json(summary)


COMMANDS = [serve, client, triton_repo]
