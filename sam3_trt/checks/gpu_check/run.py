"""The gpu-check driver: stages as data, one report folder, a deadline that stops it cleanly.

Without a GPU (and without ``--simulate``) it runs the stages that need none, marks the rest
``needs-gpu`` and raises one line naming the first stage that needs a GPU: that is the dry run a machine
without a GPU can do. ``--simulate`` runs every stage on the CPU through :mod:`sam3_trt.testing`'s
doubles (engines run as their ONNX graphs, eager on the CPU), so everything but the GPU calls is
exercised; its report says so on every line and holds no measurement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...errors import Sam3TrtError
from . import stages as st
from .report import CheckReport

#: Exit status when the deadline stops a run (as ``timeout(1)``).
DEADLINE_EXIT = 124


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage.

    Args:
        key: Letter (``a``..``e``), used by ``--stages`` and in the report.
        name: Short name.
        needs_gpu: Whether it can only run on a GPU (or ``--simulate``).
        needs: Stages whose result it reads (they must have finished: ``ok`` or ``failed``).
        what: One line for the report.
        run: The stage function (:mod:`.stages`).
    """

    key: str
    name: str
    needs_gpu: bool
    needs: tuple[str, ...]
    what: str
    run: Callable[[CheckContext], dict[str, Any]]


STAGES: tuple[Stage, ...] = (
    Stage("a", "environment", False, (), "GPU, driver, compute capability, versions", st.environment),
    Stage("b", "engines", True, (), "tiny FP32/FP16 engines built on this GPU and run; AOT engines", st.engines),
    Stage("c", "tiny-parity", True, ("b",), "tiny engines against eager FP32", st.tiny_parity),
    Stage("d", "full-latency", True, (), "FP16 engines vs eager FP32/bf16 on this GPU", st.full_latency),
    Stage(
        "e", "fp16-accuracy", True, ("d",), "FP16 policies (default, attention FP32) vs FP32 eager", st.fp16_accuracy
    ),
)
STAGE_KEYS = tuple(s.key for s in STAGES)


@dataclasses.dataclass(frozen=True)
class GpuCheckOptions:
    """What to run.

    Args:
        out: Report folder (everything the check writes goes inside it).
        stages: Stage letters to run, in order (default: all).
        deadline_s: Stop cleanly this many seconds after the start (``None``: no limit).
        resume: Keep the stages an earlier run into ``out`` finished; run the rest.
        simulate: Run every stage on the CPU through the GPU doubles (no measurement).
        tiny_export: A tiny FP32 export to reuse (default: one exported into ``out``).
        full_variant: Model of stages d and e (``full``; ``tiny`` for quick simulated runs).
        flavour: ``auto`` (standard TensorRT when installed, else TensorRT for RTX), ``rtx`` or ``tensorrt``.
        rtx_cc: TensorRT for RTX compute capability: ``current`` or ``smXY`` (default: the GPU's own when
            TensorRT for RTX lists it, else ``current``).
        aot_engines: An engine folder built ahead of time elsewhere, loaded and run in stage b.
        repeats: Timed runs per backend in stage d.
        shape_buckets: The shape buckets TensorRT for RTX engines built here record
            (:mod:`sam3_trt.engines.rtx_runtime`; ``None``: the default).
    """

    out: Path
    stages: tuple[str, ...] = STAGE_KEYS
    deadline_s: float | None = None
    resume: bool = False
    simulate: bool = False
    tiny_export: Path | None = None
    full_variant: str = "full"
    flavour: str = "auto"
    rtx_cc: str | None = None
    aot_engines: Path | None = None
    repeats: int = 5
    shape_buckets: tuple[int, ...] | None = None

    def build_options(self) -> Any:
        """The builder options of the engines built here."""
        from ...engines.builder import BuildOptions
        from ...engines.rtx_runtime import RtxRuntimeSettings

        if self.shape_buckets is None:
            return BuildOptions()
        return BuildOptions(rtx_runtime=RtxRuntimeSettings(shape_buckets=self.shape_buckets))

    def check(self) -> None:
        """Raise one line for the first bad option (before any work)."""
        bad = [s for s in self.stages if s not in STAGE_KEYS]
        if bad or not self.stages:
            raise Sam3TrtError(f"--stages {','.join(self.stages)}: use letters from {','.join(STAGE_KEYS)} (or all)")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise Sam3TrtError(f"--deadline {self.deadline_s:g}: give seconds > 0")
        if self.full_variant not in ("full", "tiny"):
            raise Sam3TrtError(f"--full-variant {self.full_variant}: use full or tiny")
        if self.flavour not in ("auto", "rtx", "tensorrt"):
            raise Sam3TrtError(f"--flavour {self.flavour}: use auto, rtx or tensorrt")
        if self.repeats < 1:
            raise Sam3TrtError(f"--repeats {self.repeats}: need at least 1")
        self.build_options()  # refuses bad --shape-buckets in one line
        for option, path in (("--tiny-export", self.tiny_export), ("--aot-engines", self.aot_engines)):
            if path is not None and not (Path(path) / "manifest.json").is_file():
                raise Sam3TrtError(f"{option} {path}: no manifest.json there; pass a folder sam3-trt wrote")
        if self.rtx_cc is not None:
            from ...engines.targets import RTX_COMPUTE_CAPABILITIES

            if self.rtx_cc != "current" and self.rtx_cc not in RTX_COMPUTE_CAPABILITIES:
                raise Sam3TrtError(
                    f"--rtx-cc {self.rtx_cc}: use current or one of {', '.join(RTX_COMPUTE_CAPABILITIES)}"
                )


class CheckContext:
    """What stages share: options, the report, the GPU, and the steps several stages take."""

    def __init__(self, options: GpuCheckOptions, report: CheckReport, gpu: Any, doubles: Any, say: Any) -> None:
        self.options = options
        self.out = Path(options.out)
        self.report = report
        self.gpu = gpu
        self.doubles = doubles
        self.simulate = doubles is not None
        self.say: Callable[[str], None] = say
        self._target: Any = None
        self._models: dict[str, tuple[Any, Any]] = {}
        self._parity: dict[tuple[str, str], dict[str, Any]] = {}

    # -- artifacts -------------------------------------------------------------------------------
    def register(self, engine_folder: Path) -> None:
        """Simulated runs: let the TensorRT double recognise this folder's plans (no-op on a GPU)."""
        if self.doubles is not None:
            self.doubles.trt.register_folder(engine_folder)

    def target(self) -> Any:
        """The build target for this GPU (see :class:`GpuCheckOptions` ``flavour`` and ``rtx_cc``)."""
        if self._target is None:
            from ...engines.targets import RTX_COMPUTE_CAPABILITIES, resolve_target, rtx_target
            from ...runtime.artifacts import installed_trt_version

            flavour = self.options.flavour
            if flavour == "auto":
                flavour = "tensorrt" if installed_trt_version("tensorrt") else "rtx"
            if flavour == "tensorrt":
                self._target = resolve_target("auto", self.gpu, "tensorrt")
            else:
                own = self.gpu.sm if self.gpu.sm in RTX_COMPUTE_CAPABILITIES else "current"
                self._target = rtx_target(self.options.rtx_cc or own, self.gpu)
        return self._target

    def _valid(self, folder: Path, kind: str) -> dict[str, Any] | None:
        from ...manifest import read_manifest, verify_files

        try:
            manifest = read_manifest(folder, kind=kind)
            verify_files(folder, manifest)
            return manifest
        except Sam3TrtError:
            return None

    def _export(self, variant: str, folder: Path) -> Path:
        """A random-weight export (seed 0) made here, reused when valid. Its ONNX Runtime parity is left out
        (CI checks it on every run, and it costs minutes at full size); stages c and e compare the engines
        made from it with eager directly."""
        from ...export.exporter import ExportOptions, export
        from ...export.model import load_model

        if self._valid(folder, "onnx-export") is not None:
            self.say(f"gpu-check: reusing {folder}")
            return folder
        self.say(f"gpu-check: exporting {variant} (random weights, seed 0) to {folder}")
        model, origin = load_model(variant=variant, random_weights=True, seed=0)
        export(model, origin, folder, ExportOptions(parity=False, rtx_parse=False, force=True), progress=self.say)
        return folder

    def tiny_export(self) -> Path:
        """The tiny FP32 export: ``--tiny-export``, or one made (and then reused) in the report folder."""
        if self.options.tiny_export is not None:
            return Path(self.options.tiny_export)
        return self._export("tiny", self.out / "tiny-export")

    def full_export(self) -> Path:
        """Stage d's export: full size from random weights, made here (its graphs are checked by stage e)."""
        if self.options.full_variant == "tiny":
            return self.tiny_export()
        return self._export("full", self.out / "full-export")

    def build(self, source: Path, name: str, target: Any) -> dict[str, Any]:
        """Engines of ``source`` for ``target`` in ``out/engines/<name>/`` (reused when built from these graphs)."""
        from ...engines.builder import build_engines
        from ...manifest import read_manifest
        from ...runtime.artifacts import installed_trt_version

        folder = self.out / "engines" / name / target.name
        graphs = read_manifest(source, kind="onnx-export")["graphs"]
        manifest = self._valid(folder, "engines")
        options = self.options.build_options()
        reused = (
            manifest is not None
            and manifest["trt_version"] == installed_trt_version(target.flavour)
            and all(manifest["graphs"][g]["onnx_sha256"] == graphs[g]["sha256"] for g in graphs)
            and manifest.get("rtx_runtime") == (options.rtx_runtime.to_manifest() if target.flavour == "rtx" else None)
        )
        if not reused:
            manifest = build_engines(source, folder.parent, target, options, progress=self.say, force=True)
        assert manifest is not None
        self.register(folder)
        return {
            "folder": str(folder),
            "reused": reused,
            "flavour": manifest["flavour"],
            "trt_version": manifest["trt_version"],
            "compute_capabilities": manifest["compute_capabilities"],
            "build_seconds": manifest["build_seconds"],
            "engine_mb": {g: round(e["bytes"] / 2**20, 1) for g, e in manifest["graphs"].items()},
        }

    def fp16_engines(self, export: Path, policy: Any, variant: str | None = None) -> dict[str, Any]:
        """FP16 graphs of ``export`` under ``policy`` (no CPU estimate: the GPU measures) and their engines,
        in ``<variant>-fp16-<policy>`` folders (so a tiny stage d reuses stage b's)."""
        from ...engines.mixed import convert_export

        name = f"{variant or self.options.full_variant}-fp16-{policy.name}"
        graphs = self.out / name
        convert_export(export, graphs, policy, progress=self.say, reuse=True, force=True, run_estimate=False)
        return self.build(graphs, name, self.target()) | {"policy": policy.name}

    # -- parity ----------------------------------------------------------------------------------
    def model(self, manifest: dict[str, Any]) -> tuple[Any, Any]:
        """The eager model of an export or engine manifest (kept for the next stage with the same weights)."""
        from ...export.model import model_from_manifest

        key = json.dumps(manifest["weights"], sort_keys=True)
        if key not in self._models:
            self._models.clear()  # one full-size model at a time
            self._models[key] = model_from_manifest(manifest)
        return self._models[key]

    def parity(self, folder: Path, name: str) -> dict[str, Any]:
        """An engine folder against eager FP32 on the CPU: ``parity-<name>.json`` / ``.png`` and a summary."""
        from ...assets.images import demo_image
        from ...manifest import read_manifest
        from ...runtime.processor import Sam3Processor
        from ..detection_parity import run_detection_parity
        from ..figures import parity_panels

        manifest = read_manifest(folder, kind="engines")
        key = (str(folder.resolve()), json.dumps(manifest["graphs"], sort_keys=True))
        if key in self._parity:  # a tiny stage e measures the engines stage c measured
            return self._parity[key]
        model, origin = self.model(manifest)
        column = manifest["precision"]["parity_column"]
        self.register(folder)
        self.say(f"gpu-check: parity of {folder} ({column} tolerances) against eager FP32")
        with Sam3Processor(folder, backend="tensorrt") as proc:
            rep = run_detection_parity(
                model,
                proc,
                [demo_image()],
                origin.describe(),
                "tensorrt",
                precision=column,
                progress=self.say,
                stages=True,
            )
        path = self.out / f"parity-{name}.json"
        path.write_text(json.dumps(rep.to_dict() | {"simulated": self.simulate}, indent=1, default=str) + "\n")
        if rep.figure_data is not None:
            random = manifest.get("weights", {}).get("kind") == "random"
            titles = ("upstream eager FP32", f"sam3-trt tensorrt {name}" + (" (SIMULATED)" if self.simulate else ""))
            parity_panels(rep.figure_data, path.with_suffix(".png"), titles, random)
        self._parity[key] = summarize_parity(rep) | {"file": path.name, "tolerances": column}
        return self._parity[key]


def summarize_parity(rep: Any) -> dict[str, Any]:
    """Headline numbers of a :class:`~sam3_trt.checks.detection_parity.DetectionReport`: per-output cosine and rel. L2, worst
    mask IoU, score and box error over every case."""
    import numpy as np

    cosine, rel_l2 = {}, {}
    for stage in rep.stages:
        for check in stage.checks:
            cosine[check.name] = check.cosine
            rel_l2[check.name] = check.rel_l2
    cases = rep.cases
    return {
        "passed": rep.passed,
        "failures": rep.failures(),
        "cosine": cosine,
        "rel_l2": rel_l2,
        # numpy carries a NaN through to the headline (Python's max/min drop it depending on the order)
        "mask_iou_min": float(np.min([c.mask_iou_min for c in cases])) if cases else 1.0,
        "score_max_abs": float(np.max([c.score_max_abs for c in cases])) if cases else 0.0,
        "box_px_max": float(np.max([c.box_px_max for c in cases])) if cases else 0.0,
        "cases": len(cases),
    }


@contextlib.contextmanager
def _gpu(simulate: bool) -> Iterator[Any]:
    """Real runs: nothing. Simulated: the GPU doubles (one fake RTX 5090-class GPU) for the whole run."""
    if not simulate:
        yield None
        return
    from ...testing import gpu_doubles

    with gpu_doubles(None) as doubles:
        yield doubles


def _watchdog(report: CheckReport, deadline_s: float, started: float) -> threading.Timer:
    def fire() -> None:
        key = report.stop_running(f"stopped at the deadline ({deadline_s:g} s after the start)")
        report.close(f"Stopped by the deadline ({deadline_s:g} s) during stage {key}; --resume continues.")
        print(
            f"error: gpu-check reached its deadline ({deadline_s:g} s) during stage {key}; "
            f"report in {report.path} (rerun with --resume to continue)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(DEADLINE_EXIT)  # the stage may be deep in a native call: leave now, the report is written

    timer = threading.Timer(max(0.0, deadline_s - (time.monotonic() - started)), fire)
    timer.daemon = True
    timer.start()
    return timer


def gpu_check(options: GpuCheckOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the selected stages into ``options.out``; returns the report data.

    Args:
        options: :class:`GpuCheckOptions`.
        progress: Called with one line per step.

    Raises:
        Sam3TrtError: a bad option; or no GPU (not simulated) once the stages that need none are done,
            naming the first stage that needs one. Stage failures do not raise: read each stage's status.
    """
    from ...device import gpu_info

    options.check()
    say = progress or (lambda _m: None)
    started = time.monotonic()
    selected = [s for s in STAGES if s.key in options.stages]
    with _gpu(options.simulate) as doubles:
        gpu = gpu_info()
        header = {
            "simulated": options.simulate,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(options).items()},
            "weights": "random (seed 0): proves mechanisms and numerical equivalence, not trained-weight FP16 ranges",
        }
        report = CheckReport(Path(options.out), header, resume=options.resume)
        ctx = CheckContext(options, report, gpu, doubles, say)
        timer = _watchdog(report, options.deadline_s, started) if options.deadline_s else None
        try:
            for i, stage in enumerate(selected):
                if report.finished(stage.key):
                    say(f"gpu-check: stage {stage.key} ({stage.name}) finished in the earlier run; kept")
                    continue
                if stage.needs_gpu and not gpu.available:
                    for rest in selected[i:]:
                        if rest.needs_gpu and not report.finished(rest.key):
                            report.mark(rest.key, rest.name, rest.what, "needs-gpu", f"no NVIDIA GPU ({gpu.reason})")
                    report.close("Stopped: the remaining stages need an NVIDIA GPU (or --simulate).")
                    raise Sam3TrtError(
                        f"gpu-check: stage {stage.key} ({stage.name}) needs an NVIDIA GPU and this machine has none "
                        f"({gpu.reason}); the stages before it are in {report.path}; --simulate runs every stage "
                        "on the CPU through GPU doubles"
                    )
                missing = [d for d in stage.needs if not report.finished(d)]
                if missing:
                    why = ", ".join(f"stage {d} is {report.status(d) or 'not run'}" for d in missing)
                    report.mark(stage.key, stage.name, stage.what, "skipped", f"needs the result of {why}")
                    continue
                say(f"gpu-check: stage {stage.key} ({stage.name}): {stage.what}")
                report.begin(stage.key, stage.name, stage.what)
                try:
                    result = stage.run(ctx)
                    report.end(stage.key, "ok", result, headline=result.get("headline"))
                except st.StageFailed as exc:
                    report.end(stage.key, "failed", exc.result, error=str(exc), headline=exc.result.get("headline"))
                except Exception as exc:  # noqa: BLE001 - a stage's error is its result; the next stage runs
                    (Path(options.out) / f"stage-{stage.key}-traceback.txt").write_text(traceback.format_exc())
                    report.end(stage.key, "error", error=f"{type(exc).__name__}: {exc}")
                say(f"gpu-check: stage {stage.key} {report.status(stage.key)}")
        finally:
            if timer is not None:
                timer.cancel()
        report.close()
        return report.data
