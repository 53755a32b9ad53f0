"""One sequence of processor calls that covers the TensorRT runtime's cases, and the comparison of two runs.

Run by the ONNX Runtime backend (the reference) and by the TensorRT backend through the doubles, in this
process (torch and cuda-python memory) and in a subprocess where importing torch is blocked
(``python tests/runtime/trt_scenario.py ENGINES EXPORT REFERENCE.npz``).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

PROMPTS_16 = [
    f"{colour} {shape}"
    for colour in ("red", "blue", "green", "yellow")
    for shape in ("square", "disc", "triangle", "blob")
]
NEGATIVE_BOX = [0.75, 0.25, 0.2, 0.2]  # normalised cx, cy, w, h
SECOND_BOX = [0.3, 0.6, 0.3, 0.3]
THIRD_BOX = [0.6, 0.7, 0.2, 0.3]
FULL_IMAGE_BOX = [0.5, 0.5, 1.0, 1.0]
KEYS = ("masks_logits", "boxes", "scores")


def images() -> tuple[Any, Any]:
    from sam3_trt.assets.images import demo_image

    # small images keep 16 prompts x 200 full-size masks cheap; the graphs still run at 1008x1008
    return demo_image(64, 48), demo_image(64, 48, variant=1)


def _host(x: Any) -> np.ndarray:
    return np.asarray(x.cpu() if hasattr(x, "cpu") else x)


def _result(r: dict) -> dict[str, np.ndarray]:
    return {k: _host(r[k]) for k in KEYS}


def run_scenario(proc: Any) -> dict[str, dict[str, np.ndarray]]:
    """Every case, in an order that moves P (prompts), N (boxes) and B (images) up and down."""
    img, img2 = images()
    proc.set_confidence_threshold(0.0)  # keep all 200 queries: every mask is compared, no threshold ties
    out: dict[str, dict[str, np.ndarray]] = {}
    state = proc.set_image(img)
    out["text"] = _result(proc.set_text_prompt("a red square", state))  # P=1, N=1 (padding)
    out["text + negative box"] = _result(proc.add_geometric_prompt(NEGATIVE_BOX, False, state))
    out["text + two boxes"] = _result(proc.add_geometric_prompt(SECOND_BOX, True, state))  # N=2
    out["text + three boxes"] = _result(proc.add_geometric_prompt(THIRD_BOX, True, state))  # N=3
    # counts between TensorRT for RTX's shape buckets (P=3, N=3 run padded to 4 there): same results
    for i, r in enumerate(proc.set_text_prompts(PROMPTS_16[4:7], state)):
        out[f"3 prompts x 3 boxes #{i}"] = _result(r)
    proc.reset_all_prompts(state)
    out["box only (full image)"] = _result(proc.add_geometric_prompt(FULL_IMAGE_BOX, True, state))  # N=1
    proc.reset_all_prompts(state)
    for i, r in enumerate(proc.set_text_prompts(PROMPTS_16, state)):  # P=16
        out[f"16 prompts #{i}"] = _result(r)
    (one,) = proc.set_text_prompts(["blue disc"], state)  # P back to 1
    out["1 prompt"] = _result(one)
    for i, st in enumerate(proc.set_image_batch([img, img2])):  # vision B=2
        out[f"image batch #{i}"] = _result(proc.set_text_prompt("green triangle", st))
    out.update(_threads(proc, img, img2))
    return out


def _threads(proc: Any, img: Any, img2: Any) -> dict[str, dict[str, np.ndarray]]:
    """Two threads share the processor, each with its own image and state."""
    results: dict[str, dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(name: str, image: Any, prompts: list[str]) -> None:
        try:
            barrier.wait()
            state = proc.set_image(image)
            for i, prompt in enumerate(prompts):
                results[f"{name} #{i}"] = _result(proc.set_text_prompt(prompt, state))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=("thread A", img, ["a red square", "blue disc", "a red square"])),
        threading.Thread(target=work, args=("thread B", img2, ["green triangle", "a shape", "blue disc"])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def onnxruntime_reference(export: Any) -> dict[str, dict[str, np.ndarray]]:
    """The scenario on ONNX Runtime (arena off: 16 prompts peak at ~7 GB on the tiny model, given back after)."""
    from sam3_trt import Sam3Processor
    from sam3_trt.runtime.backends import OnnxRuntimeBackend
    from sam3_trt.testing.fake_gpu import release_host_memory

    with Sam3Processor(export, backend=OnnxRuntimeBackend(export, memory_arena=False)) as proc:
        results = run_scenario(proc)
    release_host_memory()
    return results


#: The TensorRT double runs the very ONNX graphs the reference runs, in ONNX Runtime: the two must agree to
#: float32 rounding, not to the FP32-versus-eager bars. Boxes are pixels (values up to ~1000: 1e-3 px is ~1 ulp).
SAME_GRAPHS_TOLERANCES = {"masks_logits_max_abs": 1e-6, "box_px_max": 1e-3, "score_max_abs": 1e-6, "mask_iou_min": 1.0}


def compare(reference: dict, candidate: dict, tolerances: dict | None = None) -> list[str]:
    """Every difference beyond ``tolerances`` (default :data:`SAME_GRAPHS_TOLERANCES`; empty when the runs agree).

    Differences are reduced with numpy (a NaN anywhere is reported, never absorbed).
    """
    tol = tolerances or SAME_GRAPHS_TOLERANCES
    problems = []
    if set(reference) != set(candidate):
        return [f"cases differ: {sorted(set(reference) ^ set(candidate))}"]
    for case, ref in reference.items():
        got = candidate[case]
        for key in KEYS:
            if ref[key].shape != got[key].shape:
                problems.append(f"{case}: {key} shape {got[key].shape} != {ref[key].shape}")
            elif not np.isfinite(got[key]).all():
                problems.append(f"{case}: {key} has NaN or infinite values")
        if problems:
            continue
        checks = {
            "masks_logits": (
                np.abs(ref["masks_logits"] - got["masks_logits"]).max(initial=0),
                tol["masks_logits_max_abs"],
            ),
            "boxes (px)": (np.abs(ref["boxes"] - got["boxes"]).max(initial=0), tol["box_px_max"]),
            "scores": (np.abs(ref["scores"] - got["scores"]).max(initial=0), tol["score_max_abs"]),
        }
        for name, (err, limit) in checks.items():
            if not err <= limit:
                problems.append(f"{case}: {name} differ by {err:.3g} > {limit}")
        a, b = ref["masks_logits"] > 0.5, got["masks_logits"] > 0.5
        union = np.logical_or(a, b).sum()
        iou = 1.0 if union == 0 else np.logical_and(a, b).sum() / union
        if iou < tol["mask_iou_min"]:
            problems.append(f"{case}: mask IoU {iou:.4f} < {tol['mask_iou_min']}")
    return problems


def worst(reference: dict, candidate: dict) -> dict[str, float]:
    """The largest difference of each key over every case (what :func:`compare` holds to its bars)."""
    return {
        key: float(max(np.abs(ref[key] - candidate[case][key]).max(initial=0) for case, ref in reference.items()))
        for key in KEYS
    }


def save_results(results: dict[str, dict[str, np.ndarray]], path: Any) -> None:
    """Write a scenario's results to an ``.npz`` (``case|key`` names), for a process that compares against them."""
    np.savez(path, **{f"{case}|{key}": value for case, out in results.items() for key, value in out.items()})


def load_results(path: Any) -> dict[str, dict[str, np.ndarray]]:
    """What :func:`save_results` wrote."""
    results: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for name in data.files:
            case, key = name.rsplit("|", 1)
            results.setdefault(case, {})[key] = data[name]
    return results


def main(engines: str, export: str, reference_file: str) -> None:
    """Subprocess entry: the scenario on TensorRT through the cuda-python layer, compared with the reference the
    parent process ran on ONNX Runtime (with torch: the torch-free pre-processing equals torchvision's resize
    byte for byte, so both processes feed the graphs the same pixels)."""
    import gc
    import json

    from sam3_trt import Sam3Processor
    from sam3_trt.testing import gpu_doubles

    reference = load_results(reference_file)
    with gpu_doubles(engines, export, memory="cuda-python") as doubles:
        with Sam3Processor(engines, backend="tensorrt") as proc:
            memory = proc.backend.memory.name
            candidate = run_scenario(proc)
        del proc
        gc.collect()
        # close() and the dropped results gave every allocation back (candidate holds host copies)
        live_bytes = doubles.gpu.live_bytes()
    report = {"memory": memory, "cases": len(candidate), "problems": compare(reference, candidate)}
    report["worst"] = worst(reference, candidate)
    report |= {"torch_imported": "torch" in sys.modules, "live_bytes": live_bytes}
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:4])
