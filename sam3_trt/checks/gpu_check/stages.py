"""The five gpu-check stages. Each takes the :class:`~.run.CheckContext` and returns its result dict, or
raises :class:`StageFailed` (a check failed: the numbers are kept) or any error (kept verbatim).

a ``environment``: GPU, driver, compute capability, versions, doctor.
b ``engines``: the tiny export's FP32 and FP16 engines built on this GPU, loaded and run once each; engines
  built ahead of time elsewhere (``--aot-engines``) loaded and run with TensorRT as the only judge.
c ``tiny-parity``: those engines against eager FP32 (per graph and per detection).
d ``full-latency``: a full-size random-weight export made here, its FP16 engines, and ``bench`` of eager
  FP32, eager bfloat16 autocast (both on this GPU) and the engines: per-stage medians, engine times from
  CUDA events, device memory.
e ``fp16-accuracy``: the full-size FP16 engines of the default policy and of one that keeps attention
  (QK^T, softmax, PV) in FP32, each against FP32 eager: cosine of ``fpn0..2``, mask IoU, score error.

The eager reference for parity runs in FP32 on the CPU: no TF32 or reduced-precision kernels can hide in
it. Random weights prove mechanisms and numerical equivalence, not trained-weight FP16 ranges.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import Sam3TrtError

if TYPE_CHECKING:
    from .run import CheckContext

#: The prompt the smoke runs of stage b use (the demo image has a red square).
SMOKE_PROMPT = "red square"


class StageFailed(Exception):
    """A stage ran and a check failed: ``result`` holds what it measured."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


# -- a -----------------------------------------------------------------------------------------------
def environment(ctx: CheckContext) -> dict[str, Any]:
    """GPU and driver, versions of everything that matters, what ``auto`` picks (no GPU needed)."""
    from importlib import metadata

    from ..bench import machine_info
    from ..doctor import report as doctor_report

    versions = {}
    for dist in (
        "torch",
        "onnx",
        "onnxruntime",
        "numpy",
        "sam3",
        "tensorrt_rtx_cu13",
        "tensorrt-rtx-cu13-bindings",
        "tensorrt",
        "cuda-bindings",
        "sam3-trt",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    torch_cuda = None
    try:
        import torch

        torch_cuda = {"cuda": torch.version.cuda, "available": bool(torch.cuda.is_available())}
    except ImportError:
        pass
    gpu = ctx.gpu.to_dict() | {"sm": ctx.gpu.sm}
    return {
        "gpu": gpu,
        "versions": versions,
        "torch_cuda": torch_cuda,
        "machine": machine_info(),
        "doctor": doctor_report(),
        "headline": (
            f"{', '.join(ctx.gpu.names)} ({ctx.gpu.sm}), driver {ctx.gpu.driver_version}"
            if ctx.gpu.available
            else f"no GPU ({ctx.gpu.reason})"
        ),
    }


# -- b -----------------------------------------------------------------------------------------------
def engines(ctx: CheckContext) -> dict[str, Any]:
    """Tiny FP32 and FP16 engines built here and run once; ahead-of-time engines loaded and run."""
    from ...engines.precision import DEFAULT_POLICY
    from ...engines.probe import probe_build

    target = ctx.target()
    result: dict[str, Any] = {"target": vars(target), "sets": {}}
    if target.flavour == "rtx" and target.sm == "current":
        # a GPU TensorRT for RTX does not list: ask in a child process, which may abort, before building here
        result["rtx_probe"] = probe = probe_build("current")
        if not probe["built"]:
            last = probe["output"].strip().splitlines()[-1:] or ["no output"]
            raise StageFailed(
                f"TensorRT for RTX cannot build for this GPU ({ctx.gpu.sm}) through ComputeCapability.CURRENT: "
                f"its build probe ended with {probe['exit']} ({last[0]}); use standard TensorRT (--flavour tensorrt) "
                "or engines built ahead of time for a listed compute capability (--rtx-cc smXY)",
                result,
            )
    export = ctx.tiny_export()
    result["export"] = str(export)
    errors = []
    builds = {
        "fp32": lambda: ctx.build(export, "tiny-fp32", target),
        "fp16": lambda: ctx.fp16_engines(export, DEFAULT_POLICY, "tiny"),
    }
    for label, build in builds.items():
        entry: dict[str, Any] = {}
        try:
            entry = build()
            entry |= smoke(ctx, Path(entry["folder"]))
        except Sam3TrtError as exc:
            entry["error"] = str(exc)
            errors.append(f"{label}: {exc}")
        result["sets"][label] = entry
    if ctx.options.aot_engines is not None:
        aot = Path(ctx.options.aot_engines)
        try:
            ctx.register(aot)
            result["aot"] = {"folder": str(aot), **smoke(ctx, aot, check_target=False)}
        except Sam3TrtError as exc:
            result["aot"] = {"folder": str(aot), "error": str(exc)}
            errors.append(f"ahead-of-time engines: {exc}")
    ran = [k for k, v in result["sets"].items() if "error" not in v]
    result["headline"] = f"{target.flavour} {target.sm}: ran {', '.join(ran) or 'nothing'}" + (
        f"; ahead of time: {'ran' if 'error' not in result['aot'] else 'refused'}" if "aot" in result else ""
    )
    if errors:
        raise StageFailed("; ".join(errors), result)
    return result


def smoke(ctx: CheckContext, folder: Path, check_target: bool = True) -> dict[str, Any]:
    """Load an engine folder and run one image and one prompt: load time, detections, engine times."""
    from ...assets.images import demo_image
    from ...manifest import read_manifest
    from ...runtime.backends.tensorrt import TensorRTBackend
    from ...runtime.processor import Sam3Processor

    start = time.perf_counter()
    backend = TensorRTBackend(folder, read_manifest(folder, kind="engines"), check_target=check_target)
    with Sam3Processor(folder, backend=backend, confidence_threshold=0.3) as proc:
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        warmed = proc.warm_up()  # TensorRT for RTX: every bucketed shape compiled, as serve and bench do
        backend.memory.synchronize()
        warm_up_s = time.perf_counter() - start
        state = proc.set_image(demo_image())
        out = proc.set_text_prompt(SMOKE_PROMPT, state)
        backend.memory.synchronize()
        return {
            "load_seconds": round(load_s, 3),
            "warm_up": {"seconds": round(warm_up_s, 3), "shapes": {g: len(v) for g, v in warmed.items()}},
            "rtx_runtime": backend.rtx_runtime.to_manifest() if backend.rtx_runtime is not None else None,
            "scratch_mb": round(backend.scratch_bytes / 2**20, 1),
            "detections": len(out["scores"]),
            "device_memory": backend.memory.name,
            "engine_ms": {k: round(v, 3) for k, v in backend.last_gpu_ms.items()},
        }


# -- c -----------------------------------------------------------------------------------------------
def tiny_parity(ctx: CheckContext) -> dict[str, Any]:
    """Stage b's engines against eager FP32, per graph and per detection."""
    built = ctx.report.result("b")["sets"]
    runnable = {k: v for k, v in built.items() if "error" not in v}
    if not runnable:
        raise Sam3TrtError("stage b ran no engine set")
    result = {label: ctx.parity(Path(entry["folder"]), f"tiny-{label}") for label, entry in runnable.items()}
    return _verdict(result, "tiny")


# -- d -----------------------------------------------------------------------------------------------
def full_latency(ctx: CheckContext) -> dict[str, Any]:
    """Full-size FP16 engines against eager FP32 and bfloat16 on this GPU (``bench``)."""
    import json

    from ...engines.precision import DEFAULT_POLICY
    from ..bench import bench_figure, bench_lines, run_bench

    export = ctx.full_export()
    engines = ctx.fp16_engines(export, DEFAULT_POLICY)
    ctx.say("gpu-check: bench (eager FP32, eager bf16 autocast, TensorRT FP16)")
    report = run_bench(
        export,
        ["torch", "tensorrt"],
        prompts=2,
        repeats=ctx.options.repeats,
        warmup=0 if ctx.simulate else 1,  # nothing is measured in a simulation: no warm-up to discard
        engines=engines["folder"],
        progress=ctx.say,
        eager_device="cpu" if ctx.simulate else "cuda",
        isolate=not ctx.simulate,
    )
    report["simulated"] = ctx.simulate
    path = ctx.out / f"bench-{ctx.options.full_variant}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    bench_figure(report, path.with_suffix(".png"))
    backends = report["backends"]
    medians = {
        label: {stage: round(v["median_ms"], 2) for stage, v in b["stages"].items()} for label, b in backends.items()
    }
    trt = backends.get("tensorrt", {})
    e2e = {label: m.get("end_to_end") for label, m in medians.items()}
    return {
        "export": str(export),
        "engines": engines,
        "bench_file": path.name,
        "median_ms": medians,
        "engine_gpu_ms": trt.get("device", {}).get("engine_gpu_time", {}),
        "device": {label: b.get("device") for label, b in backends.items()},
        "speedup_vs_eager": report["speedup_vs_eager"],
        "table": bench_lines(report),
        "headline": "end to end median ms: " + ", ".join(f"{k} {v}" for k, v in e2e.items()),
    }


# -- e -----------------------------------------------------------------------------------------------
def fp16_accuracy(ctx: CheckContext) -> dict[str, Any]:
    """Full-size FP16 engines of two policies against FP32 eager."""
    from ...engines.precision import ATTENTION_FP32_POLICY, DEFAULT_POLICY

    export = Path(ctx.report.result("d")["export"])
    result = {}
    for policy in (DEFAULT_POLICY, ATTENTION_FP32_POLICY):
        folder = Path(ctx.fp16_engines(export, policy)["folder"])
        result[policy.name] = ctx.parity(folder, f"{ctx.options.full_variant}-fp16-{policy.name}")
    return _verdict(result, ctx.options.full_variant)


def _verdict(result: dict[str, Any], what: str) -> dict[str, Any]:
    heads = []
    for label, r in result.items():
        fpn = ", ".join(f"{k} {v:.6f}" for k, v in r["cosine"].items() if k.startswith("fpn"))
        heads.append(
            f"{label}: {'passed' if r['passed'] else 'FAILED'} (IoU>={r['mask_iou_min']:.4f}, "
            f"score<={r['score_max_abs']:.3g}{', cos ' + fpn if fpn else ''})"
        )
    result = {**result, "headline": "; ".join(heads)}
    failed = [label for label, r in result.items() if isinstance(r, dict) and not r["passed"]]
    if failed:
        raise StageFailed(f"{what} parity failed for {', '.join(failed)}", result)
    return result
