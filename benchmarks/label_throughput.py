"""Images per second and peak memory of ``sam3-trt label`` beside a plain loop over upstream's eager processor.

Each side runs in its own process on the same drawn images and prompts (so peak RSS is its own), in one
invocation of this script (so the machine is the same): ``sam3-trt label`` on the export's graphs (ONNX
Runtime; decode and RLE threads, vision batches), and a loop over upstream's ``Sam3Processor`` on the eager
model rebuilt from the export's weights (``set_image``, then ``set_text_prompt`` per prompt, masks to RLE).
A second pair runs large photos at threshold 0 (every query kept) to show memory per image: ``label`` keeps at
most ``--max-detections`` and holds one full-size mask at a time; upstream upsamples every query's mask.

    python benchmarks/label_throughput.py --export artifacts/demo --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["cat", "red box", "person"]

LABEL = """
import json, resource, sys, time
from sam3_trt.datasets.label import LabelSettings, label
images, export, out, threshold, max_det = sys.argv[1:6]
t = time.perf_counter()
s = label(images, out, export, prompts=__PROMPTS__, settings=LabelSettings(float(threshold), int(max_det), 2, 64))
print(json.dumps({"seconds": time.perf_counter() - t, "images": s["labelled"], "detections": s["detections"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""".replace("__PROMPTS__", repr(PROMPTS))

EAGER = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
from pathlib import Path
from PIL import Image
from sam3.model.sam3_image_processor import Sam3Processor
from sam3_trt.export.model import model_from_manifest
from sam3_trt.export.patches import cpu_compat
from sam3_trt.manifest import read_manifest
from sam3_trt.rle import mask_to_compressed_rle
images, export, out, threshold, max_det = sys.argv[1:6]
model, _ = model_from_manifest(read_manifest(export))
processor = Sam3Processor(model, device="cpu", confidence_threshold=float(threshold))
files = sorted(p for p in Path(images).iterdir() if p.suffix == ".png")
t = time.perf_counter()
n = 0
with cpu_compat():  # upstream's box encoding pins memory, which needs a GPU
    for f in files:
        state = processor.set_image(Image.open(f).convert("RGB"))
        for prompt in __PROMPTS__:
            state = processor.set_text_prompt(prompt, state)
            for mask in state["masks"][: int(max_det)]:
                mask_to_compressed_rle(mask[0].numpy()); n += 1
print(json.dumps({"seconds": time.perf_counter() - t, "images": len(files), "detections": n,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""".replace("__PROMPTS__", repr(PROMPTS))


def draw(folder: Path, count: int, width: int, height: int) -> None:
    from sam3_trt.assets.images import demo_image

    folder.mkdir(parents=True)
    for i in range(count):
        demo_image(width + 16 * i, height).save(folder / f"img{i:03d}.png")


def run(code: str, images: Path, export: Path, out: Path, threshold: float, max_det: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, str(images), str(export), str(out), str(threshold), str(max_det)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["images_per_s"] = result["images"] / result["seconds"]
    return result


def chart(report: dict, path: Path) -> None:
    """The PNG of a report (also redrawn from a saved JSON: ``--redraw``)."""
    from sam3_trt.checks.figures import bar_chart

    runs = report["runs"]
    bar_chart(
        ["images/s", "peak RSS, GB"],
        {n: [r["speed"]["images_per_s"], r["large_threshold_0"]["peak_rss_mb"] / 1024] for n, r in runs.items()},
        path,
        "sam3-trt label vs a plain loop over upstream's eager Sam3Processor (same images, same prompts)",
        unit="",
        subtitle=f"{report['machine']}; {report['images']} images of about 640x480 at threshold 0.5 (images/s); "
        f"{report['large']['count']} of {report['large']['megapixels']:g} MP at threshold 0 (peak RSS)",
        digits=2,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, help="export folder (the tiny one on a CPU)")
    parser.add_argument("--redraw", type=Path, help="only redraw the PNG of this saved JSON")
    parser.add_argument(
        "--images", type=int, default=12, help="drawn images (480 high, 640 + 16 i wide) for the speed pair"
    )
    parser.add_argument("--large", type=int, default=2, help="drawn large photos for the memory pair")
    parser.add_argument("--large-mp", type=float, default=4.0, help="megapixels of each large photo")
    parser.add_argument("--out", type=Path, help="folder for label_throughput.json and .png")
    args = parser.parse_args()
    if args.redraw:
        chart(json.loads(args.redraw.read_text()), args.redraw.with_suffix(".png"))
        return
    if args.export is None or args.out is None:
        parser.error("--export and --out are required (or --redraw JSON)")

    with tempfile.TemporaryDirectory(prefix="sam3trt-label-bench-") as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        draw(small, args.images, 640, 480)
        side = int((args.large_mp * 1e6 / 12) ** 0.5)
        draw(large, args.large, 4 * side, 3 * side)
        runs = {}
        for name, code in (("sam3-trt label (ONNX Runtime)", LABEL), ("upstream eager loop", EAGER)):
            runs[name] = {
                "speed": run(code, small, args.export, Path(tmp) / f"s-{len(runs)}", 0.5, 100),
                "large_threshold_0": run(code, large, args.export, Path(tmp) / f"l-{len(runs)}", 0.0, 100),
            }
            print(name, json.dumps(runs[name]), file=sys.stderr)
    report = {
        "what": "images/s (480 high, 640 to 640 + 16 (n-1) wide, 3 prompts, threshold 0.5) and peak RSS (large photos, "
        "threshold 0; masks written: label at most 100 per image, the eager loop at most 100 per prompt) of each "
        "side in its own process",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "export": str(args.export),
        "prompts": PROMPTS,
        "images": args.images,
        "large": {"count": args.large, "megapixels": args.large_mp},
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(report, args.out / "label_throughput.png")


if __name__ == "__main__":
    main()
