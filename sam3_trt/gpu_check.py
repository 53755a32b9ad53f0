"""``make gpu-check``: one report folder a user can attach to a bug report.

Steps: ``doctor``; the export (reused when one passes its manifest check); the FP16 pass with its CPU
estimate (reused when current); engines for the local GPU; parity of the TensorRT backend against eager
(per stage and end to end, with a mask figure); ``bench`` of eager, ONNX Runtime and TensorRT. Every
step writes its JSON (and PNG) into the report folder and a line into ``summary.md``. Without a GPU it
runs the CPU steps and stops with one line saying what it could not run.

**GPU steps not yet run on hardware by this project** (no GPU was available while writing it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ParityError, Sam3TrtError


class Report:
    """The report folder: step lines for ``summary.md`` and JSON files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lines: list[str] = []
        folder.mkdir(parents=True, exist_ok=True)

    def step(self, name: str, status: str, detail: str = "") -> None:
        self.lines.append(f"| {name} | {status} | {detail} |")
        self.write()

    def save_json(self, name: str, data: Any) -> Path:
        path = self.folder / name
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return path

    def write(self, footer: str = "") -> None:
        head = ["# sam3-trt gpu-check", "", f"Made {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", ""]
        table = ["| step | status | detail |", "|---|---|---|", *self.lines]
        (self.folder / "summary.md").write_text("\n".join([*head, *table, "", footer]).rstrip() + "\n")


def gpu_check(
    out_dir: Path,
    variant: str = "full",
    artifacts: Path | None = None,
    engines_root: Path = Path("engines"),
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Run every step this machine can; returns the report folder.

    Args:
        out_dir: Report folder.
        variant: ``full`` or ``tiny`` (random weights when exporting here).
        artifacts: An existing FP32 export folder to reuse (default: ``artifacts/<variant>`` when it holds a
            valid export, else one exported into ``out_dir``). Everything this writes stays in ``out_dir``
            (and ``engines_root``).
        engines_root: Parent folder for the engines.
        progress: Called with one line per step.

    Raises:
        Sam3TrtError: no GPU (after the CPU steps), naming what was not run and where the report is.
        ParityError: TensorRT parity failed (the report holds the details).
    """
    from .device import gpu_info
    from .doctor import report as doctor_report
    from .engines.mixed import convert_export
    from .engines.precision import DEFAULT_POLICY
    from .manifest import read_manifest, verify_files

    say = progress or (lambda _m: None)
    rep = Report(out_dir)
    doctor = doctor_report()
    rep.save_json("doctor.json", doctor)
    rep.step("doctor", "ok", "doctor.json")

    export_dir = artifacts or Path("artifacts") / variant
    try:
        verify_files(export_dir, read_manifest(export_dir, kind="onnx-export"))
        rep.step("export", "reused", str(export_dir))
    except Sam3TrtError:
        if artifacts is not None:
            raise
        export_dir = out_dir / f"export-{variant}"
        from .export.exporter import export
        from .export.model import load_model

        say(f"gpu-check: exporting {variant} (random weights) to {export_dir}")
        model, origin = load_model(variant=variant, random_weights=True, seed=0)
        export(model, origin, export_dir, progress=say)
        del model
        rep.step("export", "ok", f"{export_dir} ({variant}, random weights)")

    fp16_dir = out_dir / f"{export_dir.name}-fp16"
    fp16 = convert_export(export_dir, fp16_dir, DEFAULT_POLICY, progress=say, reuse=True, force=True)
    rep.save_json("fp16_estimate.json", fp16["checks"]["fp16_estimate"])
    rep.step("fp16 pass + CPU estimate", "ok", f"{fp16_dir}; fp16_estimate.json")

    gpu = gpu_info()
    if not gpu.available:
        missing = "engines for the local GPU, TensorRT parity against eager, GPU bench"
        rep.step("GPU steps", "not run", f"no NVIDIA GPU ({gpu.reason})")
        rep.write(f"Stopped: {missing} need an NVIDIA GPU.")
        raise Sam3TrtError(
            f"gpu-check ran the CPU steps (report in {out_dir}) and stopped: {missing} need an NVIDIA GPU "
            f"({gpu.reason})"
        )
    return _gpu_steps(rep, export_dir, fp16_dir, engines_root / variant, gpu, say)


def _gpu_steps(rep: Report, export_dir: Path, fp16_dir: Path, engines_root: Path, gpu: Any, say: Any) -> Path:
    """GPU only (not yet run on hardware): engines, TensorRT parity, bench."""
    from .assets.images import demo_image
    from .bench import bench_lines, run_bench
    from .engines.builder import build_engines
    from .engines.targets import resolve_target
    from .export.model import model_from_manifest
    from .figures import parity_panels
    from .parity import run_detection_parity
    from .runtime.processor import Sam3Processor

    target = resolve_target("auto", gpu)
    manifest = build_engines(fp16_dir, engines_root, target, progress=say, force=True)
    engine_dir = engines_root / target.name
    rep.save_json("engines_manifest.json", manifest)
    rep.step("engines", "ok", f"{engine_dir} ({manifest['flavour']} {manifest['trt_version']}, {target.sm})")

    model, origin = model_from_manifest(manifest)
    with Sam3Processor(engine_dir, backend="tensorrt") as proc:
        report = run_detection_parity(
            model, proc, [demo_image()], origin.describe(), "tensorrt", precision="fp16", progress=say, stages=True
        )
    del model
    rep.save_json("parity.json", report.to_dict())
    if report.figure_data is not None:
        random = manifest.get("weights", {}).get("kind") == "random"
        titles = ("upstream eager", f"sam3-trt tensorrt {manifest['precision']['mode']}")
        parity_panels(report.figure_data, rep.folder / "parity.png", titles, random)
    rep.step("parity (tensorrt fp16 vs eager)", "passed" if report.passed else "FAILED", ", ".join(report.failures()))

    bench = run_bench(export_dir, ["torch", "onnxruntime", "tensorrt"], engines=engine_dir, progress=say)
    rep.save_json("bench.json", bench)
    rep.step("bench", "ok", "bench.json")
    rep.write("```\n" + "\n".join(bench_lines(bench)) + "\n```")
    if not report.passed:
        raise ParityError(f"TensorRT parity failed: {', '.join(report.failures())} (report in {rep.folder})")
    return rep.folder
