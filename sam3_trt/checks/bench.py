"""``sam3-trt bench``: per-stage latency of each backend against upstream eager sam3, side by side.

Each backend runs in its own process (``python -m sam3_trt.checks.bench WORKER_JSON``) with the same thread
count, one after another, on the same image file and prompts. A worker times, over ``repeats`` runs
after ``warmup`` runs: image decode, preprocess, vision encoder, ``set_image``, text encoder, decoder,
post-processing, ``set_text_prompt`` with a cold text cache and again with the prompt already seen
(warm), and end to end (decode + ``set_image`` + one cold prompt); plus model load time and the
process's peak host memory. On a GPU it adds device memory and CUDA-event engine times. With ``clicks``
(an export made with ``--video``) it also times what an annotation tool waits for after ``set_image``: one
click (three masks), the click head graph inside it, and a refining call (a positive and a negative click
with the best mask's low-res logits fed back), through ``predict_inst`` on both sides.

Stages of upstream eager sam3 come from wrapping its own calls (``backbone.forward_image``,
``backbone.forward_text``, ``forward_grounding``); upstream has no text cache, so its warm and cold
prompt times are the same measurement. The parent computes each backend's speed-up over eager and
checks it against :data:`TARGETS` (held as data, printed beside the measurement; never asserted in
timed unit tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: Published targets (from the bench issue). CPU: speed-up of ONNX Runtime over eager, full-size model;
#: GPU: milliseconds on the named GPU (1008 px image plus one text prompt). Confirm on hardware.
TARGETS: dict[str, Any] = {
    "cpu_speedup_vs_eager": {"set_image": 1.3, "text_cold": 1.1, "text_warm": 1.3, "peak_rss_ratio_max": 1.0},
    "gpu_ms": {
        "h100": {"end_to_end": 12.0, "extra_prompt": 2.0},
        "5090": {"end_to_end": 20.0, "extra_prompt": 2.0},
    },
}

STAGES = (
    "decode",
    "preprocess",
    "vision_encoder",
    "set_image",
    "text_encoder",
    "decoder",
    "postprocess",
    "text_cold",
    "text_warm",
    "end_to_end",
)
#: Stages timed with ``clicks`` only (after ``set_image``, through ``predict_inst``).
CLICK_STAGES = ("click", "click_head", "click_refine")
STAGES += CLICK_STAGES
#: Automatic masks of one image (``--automatic N``: an N x N grid of clicks), seconds per image.
AUTOMATIC_STAGES = ("automatic",)
STAGES += AUTOMATIC_STAGES
#: Filters off on both sides: every grid mask is upsampled, scored and encoded (the most work a grid can cost).
AUTOMATIC_FILTERS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "output_mode": "binary_mask"}
#: Largest ``--automatic`` grid side (SAM2's default is 32; 64 is 4,096 clicks per image).
MAX_GRID = 64
DEFAULT_PROMPTS = ("a red square", "blue disc", "green triangle", "a shape", "background")


@dataclasses.dataclass
class WorkerConfig:
    """What one worker process measures.

    Args:
        backend: ``torch`` (upstream eager), ``onnxruntime`` or ``tensorrt``.
        artifacts: Export folder (``torch`` and ``onnxruntime``) or engine folder (``tensorrt``).
        image: Image file to decode each run.
        prompts: Text prompts (the first K are used).
        repeats: Timed runs.
        warmup: Untimed runs first.
        threads: CPU threads (torch and ONNX Runtime alike).
        device: ``torch`` only: ``"cpu"`` or ``"cuda"`` (eager runs on the GPU the engines run on).
        autocast: ``torch`` only: ``"bfloat16"`` runs eager under autocast on its device, as upstream's examples do.
        device_memory: ``tensorrt`` only: device-memory provider (``auto``, ``torch``, ``cuda-python``).
        clicks: Also time ``predict_inst`` (a click, then a refining call) after ``set_image``; the image is
            then encoded by the video vision graph (with the tracker levels the click head reads).
        automatic: Also time automatic masks of the image on an ``automatic x automatic`` grid (0: not), with
            :data:`AUTOMATIC_FILTERS`: ours (:class:`~sam3_trt.runtime.automatic.Sam3AutomaticMaskGenerator`)
            and upstream's (SAM2's generator over SAM3's click predictor). Needs the click head, as ``clicks``.
    """

    backend: str
    artifacts: str
    image: str
    prompts: list[str]
    repeats: int = 3
    warmup: int = 1
    threads: int = 2
    device: str = "cpu"
    autocast: str | None = None
    device_memory: str = "auto"
    clicks: bool = False
    automatic: int = 0

    @property
    def interactive(self) -> bool:
        """Whether the model must answer clicks (the click stages or automatic masks)."""
        return self.clicks or self.automatic > 0


def _stats(values: Sequence[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(p90, 3), "min_ms": round(ms[0], 3)}


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kB


@contextlib.contextmanager
def _timed_attr(
    obj: Any, name: str, sink: dict[str, float], key: str, sync: Callable[[], None] | None = None
) -> Iterator[None]:
    """Wrap ``obj.name`` so each call adds its wall time to ``sink[key]`` (restored on exit).

    ``sync`` (``torch.cuda.synchronize`` on a GPU) runs before and after, so the time is the stage's own
    GPU work, not what it queued.
    """
    original = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if sync:
            sync()
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if sync:
                sync()
            sink[key] = sink.get(key, 0.0) + time.perf_counter() - start

    from ..export.patches import swap_attr

    with swap_attr(obj, name, wrapper):
        yield


def run_worker(cfg: WorkerConfig) -> dict[str, Any]:
    """Measure one backend in this process (see the module docstring).

    Args:
        cfg: :class:`WorkerConfig`.
    """
    if cfg.backend == "torch":
        return _run_eager(cfg)
    return _run_ours(cfg)


def _run_ours(cfg: WorkerConfig) -> dict[str, Any]:
    from ..runtime.automatic import Sam3AutomaticMaskGenerator
    from ..runtime.image import open_image, preprocess
    from ..runtime.interactive import GRAPH as INTERACTIVE_GRAPH
    from ..runtime.processor import Sam3Processor

    start = time.perf_counter()
    proc = Sam3Processor(
        cfg.artifacts,
        backend=cfg.backend,
        threads=cfg.threads,
        device_memory=cfg.device_memory,
        interactive=cfg.interactive,
    )
    memory = getattr(proc.backend, "memory", None)  # TensorRT: wall times wait for the GPU

    def _sync(_backend: str) -> None:
        if memory is not None:
            memory.synchronize()

    def graph_s(graph: str) -> float:
        """A graph's time in its latest run: on TensorRT its CUDA events (the wall time around a run is only the
        enqueue; the GPU work lands in whatever waits next), elsewhere the run's wall time."""
        if memory is not None:
            return proc.backend.last_gpu_ms[graph] / 1000
        return proc.backend.last_seconds[graph]

    proc.backend.load_all(proc.graphs)  # ONNX Runtime sessions are lazy: count their creation as load time
    load_s = time.perf_counter() - start
    # TensorRT for RTX compiles kernels per shape: every bucketed shape before the timed runs, its cost reported
    start = time.perf_counter()
    warmed = proc.warm_up() if proc.backend.shape_buckets else {}
    warm_up_s = time.perf_counter() - start
    proc.set_confidence_threshold(0.5)
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    gpu_ms: dict[str, list[float]] = {}
    text_runs_warm: list[int] = []
    prompts = cfg.prompts
    for rep in range(cfg.warmup + cfg.repeats):
        sample: dict[str, float] = {}
        t = time.perf_counter()
        image = open_image(cfg.image)
        sample["decode"] = time.perf_counter() - t
        t = time.perf_counter()
        preprocess(image)
        sample["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        state = proc.set_image(image)
        _sync(cfg.backend)
        sample["set_image"] = time.perf_counter() - t
        sample["vision_encoder"] = graph_s(proc.graphs[0])  # the video one with --clicks
        proc.clear_text_cache()
        cold, warm, text, dec = [], [], [], []
        warm_text_runs = 0
        for prompt in prompts:
            t = time.perf_counter()
            proc.set_text_prompt(prompt, state)
            _sync(cfg.backend)
            cold.append(time.perf_counter() - t)
            text.append(graph_s("text_encoder"))
            dec.append(graph_s("decoder"))
        for prompt in prompts:
            proc.backend.last_seconds.pop("text_encoder", None)
            t = time.perf_counter()
            proc.set_text_prompt(prompt, state)
            _sync(cfg.backend)
            warm.append(time.perf_counter() - t)
            # the text cache is the whole point of a warm prompt: record whether the encoder ran anyway
            warm_text_runs += "text_encoder" in proc.backend.last_seconds
        sample |= _prompt_stages(sample, cold, warm, text, dec)
        if cfg.clicks:
            sample |= _click_stages(functools.partial(proc.predict_inst, state), image.size, lambda: _sync(cfg.backend))
            sample["click_head"] = graph_s(INTERACTIVE_GRAPH)  # of the refining call
        if cfg.automatic:
            generator = Sam3AutomaticMaskGenerator(proc, points_per_side=cfg.automatic, **AUTOMATIC_FILTERS)
            sample["automatic"], masks = _automatic_stage(generator, image, lambda: _sync(cfg.backend))
        if rep >= cfg.warmup:
            for k, v in sample.items():
                times[k].append(v)
            text_runs_warm.append(warm_text_runs)
            for graph, ms in getattr(proc.backend, "last_gpu_ms", {}).items():
                gpu_ms.setdefault(graph, []).append(ms / 1000)
    result = _result(cfg, load_s, times)
    result["text_encoder_runs_when_warm"] = sum(text_runs_warm)
    if cfg.automatic:
        result["automatic"] = {"points": cfg.automatic**2, "masks": masks}
    if warmed:
        result["warm_up"] = {"seconds": round(warm_up_s, 3), "shapes": {g: len(v) for g, v in warmed.items()}}
        result["rtx_runtime"] = proc.backend.rtx_runtime.to_manifest()
    if cfg.backend == "onnxruntime":
        result["attention_sites_fused"] = dict(proc.backend.fused_sites)
    if memory is not None:
        backend = proc.backend
        result["device"] = {
            "name": backend.gpu.names[backend.device_index],
            "device_memory": memory.name,
            "memory": memory.memory_info(),
            # one block shared by every context (TensorRT's default would hold one per context)
            "scratch_mb": round(backend.scratch_bytes / 2**20, 1),
            "engine_gpu_time": {g: _stats(v) for g, v in gpu_ms.items()},
        }
    proc.close()
    return result


def _run_eager(cfg: WorkerConfig) -> dict[str, Any]:
    import torch

    from ..export.model import model_from_manifest
    from ..export.patches import cpu_compat
    from ..manifest import read_manifest
    from ..runtime.image import open_image
    from .eager_automatic import upstream_automatic_generator

    torch.set_num_threads(cfg.threads)
    on_gpu = cfg.device != "cpu"
    start = time.perf_counter()
    manifest = read_manifest(cfg.artifacts)
    model, _ = model_from_manifest(manifest, video=cfg.interactive)
    if cfg.interactive:  # as upstream's build_sam3_image_model(enable_inst_interactivity=True) attaches it
        from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

        from ..export.tracker_model import tracker_from_manifest

        model.inst_interactive_predictor = SAM3InteractiveImagePredictor(tracker_from_manifest(manifest)[0]).eval()
    # upstream builds on CUDA by default; our CPU construction patches stay on only for CPU runs
    compat = cpu_compat if not on_gpu else contextlib.nullcontext
    with compat():
        from sam3.model.sam3_image_processor import Sam3Processor as Upstream

        model = model.to(cfg.device)
        proc = Upstream(model, device=cfg.device, confidence_threshold=0.5)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    load_s = time.perf_counter() - start
    autocast = (
        torch.autocast(device_type="cuda" if on_gpu else "cpu", dtype=getattr(torch, cfg.autocast))
        if cfg.autocast
        else contextlib.nullcontext()
    )
    times: dict[str, list[float]] = {s: [] for s in STAGES if s not in ("preprocess",)}
    sink: dict[str, float] = {}
    sync = torch.cuda.synchronize if on_gpu else None
    with (
        torch.inference_mode(),
        compat(),
        autocast,
        _timed_attr(model.backbone, "forward_image", sink, "vision_encoder", sync),
        _timed_attr(model.backbone, "forward_text", sink, "text_encoder", sync),
        _timed_attr(model, "forward_grounding", sink, "decoder", sync),
    ):
        for rep in range(cfg.warmup + cfg.repeats):
            sink.clear()
            sample: dict[str, float] = {}
            t = time.perf_counter()
            image = open_image(cfg.image)
            sample["decode"] = time.perf_counter() - t
            t = time.perf_counter()
            state = proc.set_image(image)
            if sync:
                sync()
            sample["set_image"] = time.perf_counter() - t
            sample["vision_encoder"] = sink["vision_encoder"]
            cold, text, dec = [], [], []
            for prompt in cfg.prompts:
                sink.pop("text_encoder", None)
                sink.pop("decoder", None)
                t = time.perf_counter()
                proc.set_text_prompt(prompt, state)
                if sync:
                    sync()
                cold.append(time.perf_counter() - t)
                text.append(sink["text_encoder"])
                dec.append(sink["decoder"])
            # upstream has no text cache: every prompt is cold, so warm is the cold measurement
            sample |= _prompt_stages(sample, cold, cold, text, dec)
            if cfg.clicks:
                predict = functools.partial(model.predict_inst, state)
                sample |= _click_stages(predict, image.size, sync or (lambda: None))
            if cfg.automatic:
                generator = upstream_automatic_generator(
                    proc,
                    model.inst_interactive_predictor.model,
                    points_per_side=cfg.automatic,
                    **AUTOMATIC_FILTERS,
                )
                sample["automatic"], masks = _automatic_stage(generator, image, sync or (lambda: None))
            if rep >= cfg.warmup:
                for k, v in sample.items():
                    times[k].append(v)
    result = _result(cfg, load_s, times)
    result["eager"] = {"device": cfg.device, "autocast": cfg.autocast}
    if cfg.automatic:
        result["automatic"] = {"points": cfg.automatic**2, "masks": masks}
    if on_gpu:
        free, total = torch.cuda.mem_get_info()
        result["device"] = {
            "name": torch.cuda.get_device_name(),
            "memory": {
                "free_mb": round(free / 2**20, 1),
                "total_mb": round(total / 2**20, 1),
                "torch_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            },
        }
    return result


def _prompt_stages(
    sample: dict[str, float], cold: list[float], warm: list[float], text: list[float], dec: list[float]
) -> dict[str, float]:
    """Prompt-stage times of one run: means over prompts; post-processing is what text and decoder leave."""
    return {
        "text_cold": statistics.mean(cold),
        "text_warm": statistics.mean(warm),
        "text_encoder": statistics.mean(text),
        "decoder": statistics.mean(dec),
        "postprocess": statistics.mean(c - x - d for c, x, d in zip(cold, text, dec, strict=True)),
        "end_to_end": sample["decode"] + sample["set_image"] + cold[0],
    }


def _click_stages(predict: Callable[..., Any], size: tuple[int, int], sync: Callable[[], None]) -> dict[str, float]:
    """Times of one click at the image centre (three masks), then a refining call: the centre positive, a
    point at a quarter negative, the best mask's low-res logits fed back, one mask."""
    import numpy as np

    w, h = size
    centre = [w / 2, h / 2]
    t = time.perf_counter()
    _, ious, low_res = predict(
        point_coords=np.array([centre], np.float32), point_labels=np.array([1]), multimask_output=True
    )
    sync()
    click = time.perf_counter() - t
    best = int(np.argmax(ious))
    t = time.perf_counter()
    predict(
        point_coords=np.array([centre, [w / 4, h / 4]], np.float32),
        point_labels=np.array([1, 0]),
        mask_input=np.asarray(low_res)[best][None],
        multimask_output=False,
    )
    sync()
    return {"click": click, "click_refine": time.perf_counter() - t}


def _automatic_stage(generator: Any, image: Any, sync: Callable[[], None]) -> tuple[float, int]:
    """Seconds of one image's automatic masks (the generator's whole ``generate``), and how many it returned."""
    import numpy as np

    pixels = np.asarray(image.convert("RGB"))
    t = time.perf_counter()
    records = generator.generate(pixels)
    sync()
    return time.perf_counter() - t, len(records)


def _result(cfg: WorkerConfig, load_s: float, times: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "backend": cfg.backend,
        "threads": cfg.threads,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "prompts": len(cfg.prompts),
        "load_s": round(load_s, 3),
        "stages": {k: _stats(v) for k, v in times.items() if v},
        "peak_rss_mb": _peak_rss_mb(),
    }


def parse_image_size(text: str, name: str = "--image-size") -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (or ``WIDTH,HEIGHT``) as ``(width, height)``, or one line naming ``name`` and the fix."""
    from ..errors import Sam3TrtError

    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise Sam3TrtError(f"{name} {text!r}: use WIDTHxHEIGHT, e.g. 1008x1008")
    return int(parts[0]), int(parts[1])


def bench_folder(
    artifacts: str | os.PathLike[str],
    backends: str,
    image_size: str = "1008x1008",
    image: Path | None = None,
    json_path: Path | None = None,
    figure: Path | None = None,
    **run: Any,
) -> dict[str, Any]:
    """``sam3-trt bench``: outputs and inputs checked first, then :func:`run_bench`, its JSON and figure written.

    Args:
        artifacts: Export folder (FP32 or FP16).
        backends: Comma list of ``torch``, ``onnxruntime``, ``tensorrt``.
        image_size: ``WIDTHxHEIGHT`` of the drawn test image.
        image: An image file to use instead.
        json_path: Report JSON to write.
        figure: Bar chart PNG of stage medians.
        **run: The rest of :func:`run_bench`'s arguments (prompts, repeats, warmup, threads, engines, ...).
    """
    from ..errors import Sam3TrtError
    from ..paths import check_output_file, write_json

    check_output_file(json_path, "--json", (".json",))
    check_output_file(figure, "--figure", (".png",))
    if image is not None and not image.is_file():
        raise Sam3TrtError(f"--image {image} does not exist")
    names = [b.strip() for b in backends.split(",") if b.strip()]
    report = run_bench(artifacts, names, image_size=parse_image_size(image_size), image=image, **run)
    write_json(json_path, report)
    if figure is not None:
        bench_figure(report, figure)
    return report


def run_bench(
    artifacts: str | os.PathLike[str],
    backends: Sequence[str],
    image_size: tuple[int, int] = (1008, 1008),
    prompts: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    engines: str | os.PathLike[str] | None = None,
    image: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    int8_artifacts: str | os.PathLike[str] | None = None,
    eager_device: str | None = None,
    isolate: bool = True,
    clicks: bool = False,
    automatic: int = 0,
) -> dict[str, Any]:
    """Run each backend in its own process and compare it with eager (``torch``) when that ran too.

    Args:
        artifacts: Export folder (eager weights come from its manifest).
        backends: Any of ``torch``, ``onnxruntime``, ``tensorrt``.
        image_size: ``(width, height)`` of the drawn test image (ignored with ``image``).
        prompts: Prompts per image (K).
        repeats: Timed runs per backend.
        warmup: Untimed runs first.
        threads: CPU threads for every backend (default: all cores).
        engines: Engine folder for ``tensorrt``.
        image: An image file to use instead of the drawn one.
        progress: Called with one line per step.
        int8_artifacts: A ``sam3-trt calibrate --mode int8`` folder made from ``artifacts``: also runs
            ONNX Runtime on it, reported as ``onnxruntime-int8`` (Q/DQ vision encoder, FP32 text and decoder).
        eager_device: Where ``torch`` runs (default: ``cuda`` when ``tensorrt`` is measured, the GPU the
            engines run on, else ``cpu``). Beside TensorRT, eager also runs under bfloat16 autocast.
        isolate: Run each backend in its own process (peak memory per backend). ``False`` runs them in
            this process: only for ``gpu-check --simulate``, whose GPU doubles live in this process.
        clicks: Also time clicks (:class:`WorkerConfig`); every folder must hold the click head.
        automatic: Also time automatic masks on an ``automatic x automatic`` grid (:class:`WorkerConfig`); every
            folder must hold the click head.
    """
    from ..errors import Sam3TrtError
    from ..manifest import read_manifest

    say = progress or (lambda _m: None)
    unknown = [b for b in backends if b not in ("torch", "onnxruntime", "tensorrt")]
    if unknown or not backends:
        raise Sam3TrtError(f"--backends {','.join(backends)}: use a comma list of torch, onnxruntime, tensorrt")
    if not 1 <= prompts <= len(DEFAULT_PROMPTS):
        raise Sam3TrtError(f"--prompts {prompts}: use 1 to {len(DEFAULT_PROMPTS)}")
    if repeats < 1 or warmup < 0:
        raise Sam3TrtError(f"--repeats {repeats} / --warmup {warmup}: need repeats >= 1 and warmup >= 0")
    if isinstance(automatic, bool) or not isinstance(automatic, int) or not 0 <= automatic <= MAX_GRID:
        raise Sam3TrtError(f"--automatic {automatic}: give the grid's points per side, 1 to {MAX_GRID} (0: off)")
    if "tensorrt" in backends and engines is None:
        raise Sam3TrtError("--backends tensorrt needs --engines DIR (an engine folder from `sam3-trt build`)")
    manifest = read_manifest(artifacts, kind="onnx-export")
    # with TensorRT, eager runs on the same GPU: in FP32, and under bfloat16 autocast as upstream's examples
    with_trt = "tensorrt" in backends
    eager = {"device": eager_device or ("cuda" if with_trt else "cpu")}
    runs: list[tuple[str, str, str, dict[str, Any]]] = []
    for b in backends:
        folder = str(engines if b == "tensorrt" else artifacts)
        runs.append((b, b, folder, eager if b == "torch" else {}))
        if b == "torch" and with_trt:
            runs.append(("torch-bf16", b, folder, {**eager, "autocast": "bfloat16"}))
    if int8_artifacts is not None:
        check_int8_source(manifest, int8_artifacts, artifacts)
        runs.append(("onnxruntime-int8", "onnxruntime", str(int8_artifacts), {}))
    if clicks or automatic:
        _check_click_folders(runs)
    threads = threads or os.cpu_count() or 1
    results: dict[str, Any] = {}
    drawn = image is None
    with tempfile.TemporaryDirectory(prefix="sam3trt-bench-") as tmp:
        if image is None:
            from ..assets.images import demo_image

            image = Path(tmp) / "bench.png"
            demo_image(*image_size).save(image)
        for label, backend, folder, extra in runs:
            cfg = WorkerConfig(
                backend=backend,
                artifacts=folder,
                image=str(image),
                prompts=list(DEFAULT_PROMPTS[:prompts]),
                repeats=repeats,
                warmup=warmup,
                threads=threads,
                clicks=clicks,
                automatic=automatic,
                **extra,
            )
            say(f"bench: {label} ({warmup} warm-up + {repeats} timed runs, {threads} threads, own process)")
            results[label] = _spawn(cfg) if isolate else run_worker(cfg)
            e2e = results[label]["stages"]["end_to_end"]["median_ms"]
            say(f"bench: {label} end to end median {e2e:.1f} ms, peak RSS {results[label]['peak_rss_mb']} MB")
    report = {
        "kind": "bench",
        "machine": machine_info(),
        "artifacts": str(artifacts),
        "weights": manifest.get("weights", {}),
        "precision": manifest.get("precision", {}).get("mode", "fp32"),
        "image": {"file": "drawn demo image" if drawn else str(image), "size": list(image_size) if drawn else None},
        "backends": results,
        "speedup_vs_eager": speedups(results),
        "targets": TARGETS,
    }
    report["target_check"] = check_targets(report)
    return report


def _check_click_folders(runs: Sequence[tuple[str, str, str, dict[str, Any]]]) -> None:
    """Refuse ``--clicks`` in one line, before any worker starts, when a folder lacks the click head."""
    from ..manifest import check_click_graphs, read_manifest

    for label, _, folder, _ in runs:
        check_click_graphs(read_manifest(folder), f"{folder} ({label})")


def check_int8_source(
    manifest: dict[str, Any], int8_artifacts: str | os.PathLike[str], artifacts: str | os.PathLike[str]
) -> None:
    """Refuse an INT8 folder that was not calibrated from ``artifacts`` (its eager twin would differ).

    Raises:
        Sam3TrtError: Not an INT8 calibration folder, or made from another export.
    """
    from ..errors import Sam3TrtError
    from ..manifest import graph_sources, read_manifest

    int8 = read_manifest(int8_artifacts, kind="onnx-export")
    precision = int8.get("precision", {})
    if precision.get("mode") != "int8":
        raise Sam3TrtError(
            f"--int8-artifacts {int8_artifacts}: precision is {precision.get('mode', 'fp32')!r}, not int8; "
            f"make one with `sam3-trt calibrate --artifacts {artifacts} --mode int8 --out DIR`"
        )
    source = precision.get("source", {}).get("graphs", {})
    ours = graph_sources(manifest)
    if source != ours:
        differ = sorted(n for n in ours if source.get(n) != ours[n])
        raise Sam3TrtError(
            f"--int8-artifacts {int8_artifacts} was calibrated from another export than {artifacts} "
            f"(graphs or weights differ: {', '.join(differ)}); "
            f"re-run `sam3-trt calibrate --artifacts {artifacts} --mode int8`"
        )


def _spawn(cfg: WorkerConfig) -> dict[str, Any]:
    from ..errors import Sam3TrtError

    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads))
    proc = subprocess.run(
        [sys.executable, "-m", "sam3_trt.checks.bench", json.dumps(dataclasses.asdict(cfg))],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise Sam3TrtError(f"bench worker for {cfg.backend} failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speedups(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``eager median / backend median`` per stage, for every backend measured beside ``torch``."""
    if "torch" not in results:
        return {}
    eager = results["torch"]["stages"]
    out = {}
    for name, res in results.items():
        if name == "torch":
            continue
        out[name] = {
            stage: round(eager[stage]["median_ms"] / res["stages"][stage]["median_ms"], 3)
            for stage in res["stages"]
            if stage in eager and res["stages"][stage]["median_ms"] > 0
        }
        out[name]["peak_rss_ratio"] = round(res["peak_rss_mb"] / results["torch"]["peak_rss_mb"], 3)
    return out


def check_targets(report: dict[str, Any]) -> dict[str, Any]:
    """Each CPU target against the measured ONNX Runtime speed-up (``None`` where not measured).

    ``cpu`` judges the FP32 ``onnxruntime`` backend (the targets' subject); ``cpu_int8``, present when
    the INT8 vision graph ran, holds the same checks for it (informational: a different precision).
    """
    ort = report["speedup_vs_eager"].get("onnxruntime")
    if ort is None:
        return {"cpu": "not measured (needs torch and onnxruntime in one run)"}
    out = {"cpu": _cpu_checks(ort), "note": "CPU targets apply to the full-size model; GPU targets need a GPU run"}
    int8 = report["speedup_vs_eager"].get("onnxruntime-int8")
    if int8 is not None:
        out["cpu_int8"] = _cpu_checks(int8)
    return out


def _cpu_checks(ort: dict[str, float]) -> dict[str, Any]:
    cpu = TARGETS["cpu_speedup_vs_eager"]
    checks = {
        stage: {"target": f">= {want}x", "measured": ort.get(stage), "met": ort.get(stage, 0) >= want}
        for stage, want in cpu.items()
        if stage != "peak_rss_ratio_max"
    }
    checks["peak_rss"] = {
        "target": f"<= {cpu['peak_rss_ratio_max']}x eager",
        "measured": ort["peak_rss_ratio"],
        "met": ort["peak_rss_ratio"] <= cpu["peak_rss_ratio_max"],
    }
    return checks


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, Python and library versions (recorded with every bench, so a results page can name the machine)."""
    from ..device import gpu_info

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0]
        info["memory_gb"] = round(int(mem.split()[1]) / 2**20, 1)
    gpu = gpu_info()
    info["gpu"] = list(gpu.names) if gpu.available else f"none ({gpu.reason})"
    from importlib import metadata

    for dist in ("torch", "onnxruntime", "sam3"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[dist] = metadata.version(dist)
    return info


def bench_figure(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Bar chart of each backend's median per stage, titled with the model, weights, machine and unit."""
    from .figures import bar_chart

    stages = [s for s in STAGES if any(s in r["stages"] for r in report["backends"].values())]
    series = {b: [r["stages"].get(s, {}).get("median_ms") for s in stages] for b, r in report["backends"].items()}
    weights = report.get("weights", {})
    machine = report.get("machine", {})
    gpu = machine.get("gpu")
    gpu_text = ", ".join(gpu) if isinstance(gpu, list) else "no GPU"
    title = (
        f"sam3-trt bench: {weights.get('variant', '?')} model, {weights.get('kind', '?')} weights, "
        f"{report.get('precision', 'fp32')}: median per stage, ms (log scale)"
    )
    subtitle = f"{machine.get('cpu', 'CPU ?')}, {machine.get('cpu_count', '?')} cores; {gpu_text}"
    bar_chart(stages, series, path, title, subtitle=subtitle)


def bench_lines(report: dict[str, Any]) -> list[str]:
    """A plain-text table: median ms per stage and backend, then speed-ups."""
    backends = list(report["backends"])
    lines = [f"{'stage (ms)':<16}" + "".join(f"{b:>14}" for b in backends)]
    for stage in STAGES:
        row = [report["backends"][b]["stages"].get(stage, {}).get("median_ms") for b in backends]
        if all(v is None for v in row):  # a stage no backend ran (the click stages without --clicks)
            continue
        lines.append(f"{stage:<16}" + "".join(f"{v:>14.1f}" if v is not None else f"{'-':>14}" for v in row))
    lines.append(f"{'load (s)':<16}" + "".join(f"{report['backends'][b]['load_s']:>14.2f}" for b in backends))
    lines.append(f"{'peak RSS (MB)':<16}" + "".join(f"{report['backends'][b]['peak_rss_mb']:>14.0f}" for b in backends))
    for name, ratios in report["speedup_vs_eager"].items():
        keys = ("set_image", "text_cold", "text_warm", "end_to_end")
        lines.append(f"{name} vs eager: " + ", ".join(f"{k} {ratios[k]:.2f}x" for k in keys if k in ratios))
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Worker entry point: one JSON :class:`WorkerConfig` argument, one JSON result line on stdout."""
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = WorkerConfig(**json.loads(args[0]))
    print(json.dumps(run_worker(cfg)))


if __name__ == "__main__":
    main()
