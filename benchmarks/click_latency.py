"""Clicks and automatic masks on the CPU: ``Sam3Processor.predict_inst`` and ``Sam3AutomaticMaskGenerator`` on the
graphs (ONNX Runtime) beside upstream's eager interactive predictor and SAM2's generator over it, in one process
on the same weights, image and settings (so the machine is the same for both columns).

Measured: ``set_image`` with the plain vision graph and with the vision graph that also gives the tracker
neck's levels (what ``interactive=True`` costs), one click after ``set_image`` (median of repeats), and one
automatic-mask image (grid points per second). The export must be a tiny ``--video`` export of random weights
with seed 0 (the eager side is rebuilt from that seed); the largest low-res logit difference of the first
click is recorded, so a mismatch of weights shows.

    sam3-trt export --variant tiny --random-weights --seed 0 --video --out /tmp/tiny-video
    python benchmarks/click_latency.py --export /tmp/tiny-video --out benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

W, H = 640, 480
CLICK = {"point_coords": np.array([[250.0, 200.0]]), "point_labels": np.array([1])}
GRID = {"points_per_side": 16, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: sessions, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="tiny --video export, random weights, seed 0")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--redraw", action="store_true", help="only redraw the PNG from the JSON")
    args = parser.parse_args()
    json_path, png_path = args.out / "click_latency_tiny.json", args.out / "click_latency_tiny.png"
    if not args.redraw:
        json_path.write_text(json.dumps(measure(args.export, args.repeats), indent=1) + "\n")
    draw(json.loads(json_path.read_text()), png_path)
    print(json_path, png_path)


def measure(export: Path, repeats: int) -> dict:
    import torch
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

    from sam3_trt import Sam3AutomaticMaskGenerator, Sam3Processor
    from sam3_trt.assets.images import demo_image
    from sam3_trt.checks.detection_parity import upstream_processor
    from sam3_trt.checks.eager_automatic import upstream_automatic_generator
    from sam3_trt.export.model import load_model
    from sam3_trt.export.patches import cpu_compat
    from sam3_trt.export.tracker_model import build_tracker

    warnings.simplefilter("ignore")
    torch.set_num_threads(torch.get_num_threads())
    image = demo_image(W, H)
    pixels = np.asarray(image)
    result: dict = {
        "machine": f"{_cpu_model()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "image": [W, H],
        "repeats": repeats,
        "grid": GRID,
    }
    clicks = Sam3Processor(export, backend="onnxruntime", interactive=True)
    result["set_image_plain_ms"] = None  # an export made by the test fixture has only the video vision graph
    if (export / "vision_encoder.onnx").is_file():
        plain = Sam3Processor(export, backend="onnxruntime")
        result["set_image_plain_ms"] = _median_ms(lambda: plain.set_image(image), repeats)
    result["set_image_interactive_ms"] = _median_ms(lambda: clicks.set_image(image), repeats)
    state = clicks.set_image(image)
    result["click_ms"] = _median_ms(lambda: clicks.predict_inst(state, **CLICK), repeats * 2)
    generator = Sam3AutomaticMaskGenerator(clicks, **GRID)
    t = time.perf_counter()
    records = generator.generate(pixels)
    result["automatic_s"] = time.perf_counter() - t
    result["automatic_masks"] = len(records)

    model, _ = load_model("tiny", random_weights=True, seed=0, video=True)
    tracker = build_tracker("tiny", seed=0)
    model.inst_interactive_predictor = SAM3InteractiveImagePredictor(copy.deepcopy(tracker)).eval()
    with upstream_processor(model) as processor, torch.inference_mode(), cpu_compat():
        result["eager_set_image_ms"] = _median_ms(lambda: processor.set_image(image), max(3, repeats // 2))
        eager_state = processor.set_image(image)
        result["eager_click_ms"] = _median_ms(lambda: model.predict_inst(eager_state, **CLICK), repeats * 2)
        low_eager = model.predict_inst(eager_state, return_logits=True, **CLICK)[2]
        low_ours = clicks.predict_inst(state, return_logits=True, **CLICK)[2]
        result["first_click_low_res_max_abs"] = float(np.abs(low_eager - low_ours).max())

        sam2 = upstream_automatic_generator(processor, tracker, output_mode="binary_mask", **GRID)
        t = time.perf_counter()
        eager_records = sam2.generate(pixels)
        result["eager_automatic_s"] = time.perf_counter() - t
        result["eager_automatic_masks"] = len(eager_records)
    points = GRID["points_per_side"] ** 2
    result["automatic_points_per_s"] = points / result["automatic_s"]
    result["eager_automatic_points_per_s"] = points / result["eager_automatic_s"]
    return result


def draw(r: dict, path: Path) -> None:
    """The PNG of a saved report (log-scale bars, values printed)."""
    from sam3_trt.checks.figures import bar_chart

    bar_chart(
        ["set_image, ms", "one click after set_image, ms", "automatic masks, s per image"],
        {
            "graphs (ONNX Runtime, interactive)": [r["set_image_interactive_ms"], r["click_ms"], r["automatic_s"]],
            "graphs, plain vision graph": [r["set_image_plain_ms"], None, None],
            "upstream eager (SAM2's generator)": [r["eager_set_image_ms"], r["eager_click_ms"], r["eager_automatic_s"]],
        },
        path,
        "Clicks and automatic masks: sam3-trt on the graphs vs upstream's eager interactive predictor",
        unit="",
        subtitle=f"{r['machine']}; tiny random weights; {r['image'][0]}x{r['image'][1]}; automatic: "
        f"{r['grid']['points_per_side']}x{r['grid']['points_per_side']} grid; {r['date']}",
    )


if __name__ == "__main__":
    main()
