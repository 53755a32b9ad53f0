"""Per-call costs of the TensorRT path, counted by the doubles: what each processor call costs besides kernels.

A GPU's speed cannot be measured without one, but what each call asks of it can: bytes copied each way,
synchronisations that stall the host, allocations that reach the driver, engine runs. The cuda-python double
counts every call (:class:`~.cuda_double.CudaRuntimeDouble`), the fake GPU models the stream-ordered pools
(:class:`~.fake_gpu.FakePool`), and :func:`measure_call_costs` runs one scenario of processor calls through them.
:data:`BUDGETS` are the limits CI holds them to; ``benchmarks/call_costs.py`` writes the table the docs show.

Only the cuda-python memory layer (the torch-free install) is counted: with torch, results stay on the
device as torch tensors and post-processing runs there, so nothing is copied back until the caller reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Explicit waits of the host for the device.
SYNC_CALLS = ("cudaStreamSynchronize", "cudaEventSynchronize", "cudaDeviceSynchronize")
#: A mask row of the decoder's output (288 x 288 float32).
MASK_ROW_BYTES = 288 * 288 * 4


@dataclasses.dataclass(frozen=True)
class CallCost:
    """What one processor call cost, as the doubles counted it.

    Args:
        call: What was called (``extra prompt``, ...).
        kept: Detections the call kept (over all its prompts).
        device_to_host_bytes: Bytes copied back.
        host_to_device_bytes: Bytes copied up.
        host_to_device_pageable_bytes: Of those, bytes copied from pageable memory (CUDA may make such a copy
            wait for every engine run queued before it); staged in pinned memory, none.
        device_to_host_copies: ``cudaMemcpyAsync`` calls to the host (from pageable memory each waits for the
            stream, as CUDA documents).
        synchronisations: Explicit host waits (:data:`SYNC_CALLS`).
        driver_allocations: Allocations no pool could serve.
        engine_runs: Engine executions, per graph.
    """

    call: str
    kept: int
    device_to_host_bytes: int
    host_to_device_bytes: int
    host_to_device_pageable_bytes: int
    device_to_host_copies: int
    synchronisations: int
    driver_allocations: int
    engine_runs: dict[str, int]


#: Budgets after warm-up (:func:`measure_call_costs` returns its second round); every call also copies nothing
#: up from pageable memory (:func:`budget_problems`). Every prompt call may copy back
#: its kept rows (mask logits and a box each) plus 1 MB per prompt: ``kept x 288 x 288 x 4 + 1 MB``. A decoder
#: batch synchronises once when it keeps nothing (the scores) and twice when it keeps detections (scores, then
#: the kept rows: which rows to copy is known only once the scores are on the host). Allocations are budgeted
#: where a call holds no more memory than the call it follows; a new image (old and new features both alive
#: while it runs) and a 16-prompt batch (larger outputs) may grow the pool, so they are reported, not budgeted.
BUDGETS: dict[str, dict[str, int]] = {
    "first prompt": {"synchronisations_if_none_kept": 1, "synchronisations": 2, "driver_allocations": 0},
    "extra prompt": {"synchronisations_if_none_kept": 1, "synchronisations": 2, "driver_allocations": 0},
    "repeated prompt": {
        "synchronisations_if_none_kept": 1,
        "synchronisations": 2,
        "driver_allocations": 0,
        "text_encoder_runs": 0,
    },
    "16-prompt batch": {"synchronisations_if_none_kept": 1, "synchronisations": 2},
    "set_image (again)": {"synchronisations": 0, "device_to_host_bytes": 0},
}


def measure_call_costs(
    engine_folder: str | Path,
    export_folder: str | Path,
    image: Any,
    threshold: float,
    prompts: tuple[str, ...] = ("a red square", "a blue disc"),
    batch: tuple[str, ...] = tuple(f"prompt {i}" for i in range(16)),
) -> list[CallCost]:
    """Run a processor over ``engine_folder`` through the doubles (cuda-python memory) and count each call.

    Calls, in order: ``set_image``, ``first prompt`` (``prompts[0]``), ``extra prompt`` (``prompts[1]`` on the
    cached image), ``repeated prompt`` (``prompts[1]`` again), ``16-prompt batch`` (``set_text_prompts``),
    ``set_image (again)`` (a new image in the same state). The sequence runs twice, the first time with other
    prompt texts (so the second still runs the text encoder for new prompts) and no batch; the second round
    is returned: costs after warm-up, when the pools hold what earlier calls freed.

    Args:
        engine_folder: Engines built from ``export_folder``.
        export_folder: The export (the double runs its graphs).
        image: The image.
        threshold: The processor's confidence threshold.
        prompts: The first and the extra prompt.
        batch: The batched prompts (``()``: no batch call).
    """
    from ..runtime.processor import Sam3Processor
    from . import gpu_doubles

    costs: list[CallCost] = []
    with gpu_doubles(engine_folder, export_folder, memory="cuda-python") as doubles:
        cudart, gpu = doubles.cudart, doubles.gpu
        with Sam3Processor(engine_folder, backend="tensorrt", confidence_threshold=threshold) as proc:

            def count(call: str, fn: Callable[[], Any], kept: Callable[[Any], int]) -> Any:
                calls, copied, copies = len(cudart.calls), dict(cudart.copied), dict(cudart.copy_calls)
                allocations, runs = gpu.driver_allocations, dict(proc.backend.calls)
                out = fn()
                made = cudart.calls[calls:]
                costs.append(
                    CallCost(
                        call=call,
                        kept=kept(out),
                        device_to_host_bytes=cudart.copied["device_to_host"] - copied["device_to_host"],
                        host_to_device_bytes=cudart.copied["host_to_device"] - copied["host_to_device"],
                        host_to_device_pageable_bytes=(
                            cudart.copied["host_to_device"] - cudart.copied["host_to_device_pinned"]
                        )
                        - (copied["host_to_device"] - copied["host_to_device_pinned"]),
                        device_to_host_copies=cudart.copy_calls["device_to_host"] - copies["device_to_host"],
                        synchronisations=sum(name in SYNC_CALLS for name in made),
                        driver_allocations=gpu.driver_allocations - allocations,
                        engine_runs={g: n - runs[g] for g, n in proc.backend.calls.items() if n != runs[g]},
                    )
                )
                return out

            def kept_of(state: dict) -> int:
                return len(state["scores"])

            def one_round(tag: str, batch: tuple[str, ...]) -> None:
                costs.clear()
                state = count("set_image", lambda: proc.set_image(image), lambda _: 0)
                count("first prompt", lambda: proc.set_text_prompt(prompts[0] + tag, state), kept_of)
                count("extra prompt", lambda: proc.set_text_prompt(prompts[1] + tag, state), kept_of)
                count("repeated prompt", lambda: proc.set_text_prompt(prompts[1] + tag, state), kept_of)
                if batch:
                    count(
                        f"{len(batch)}-prompt batch",
                        lambda: proc.set_text_prompts([p + tag for p in batch], state),
                        lambda results: sum(len(r["scores"]) for r in results),
                    )
                count("set_image (again)", lambda: proc.set_image(image, state), lambda _: 0)

            # other texts, so the measured round's prompts still miss the text cache; no batch (the decoder at
            # 16 prompts is the slow part on ONNX Runtime, and batch allocations are reported, not budgeted)
            one_round(" (warm-up)", ())
            one_round("", batch)
    return costs


def budget_problems(costs: list[CallCost], batch_size: int = 16) -> list[str]:
    """Every budget of :data:`BUDGETS` that ``costs`` exceed, one line each (empty when all hold).

    Args:
        costs: From :func:`measure_call_costs`.
        batch_size: Prompts of its batch call (``"N-prompt batch"`` calls take the 16-prompt budget, per prompt).
    """
    problems: list[str] = []
    for cost in costs:
        budget = BUDGETS.get(cost.call, {})
        limits: dict[str, tuple[int, int]] = {}  # what -> (value, limit)
        batched = cost.call.endswith("-prompt batch")
        budget = BUDGETS.get("16-prompt batch", {}) if batched else budget
        if cost.call in PROMPT_CALLS or batched:
            prompts = batch_size if batched else 1
            limits["device-to-host bytes"] = (cost.device_to_host_bytes, cost.kept * MASK_ROW_BYTES + prompts * 2**20)
        if "device_to_host_bytes" in budget:
            limits["device-to-host bytes"] = (cost.device_to_host_bytes, budget["device_to_host_bytes"])
        if "driver_allocations" in budget:
            limits["driver allocations"] = (cost.driver_allocations, budget["driver_allocations"])
        if "text_encoder_runs" in budget:
            limits["text encoder runs"] = (cost.engine_runs.get("text_encoder", 0), budget["text_encoder_runs"])
        if cost.kept == 0 and "synchronisations_if_none_kept" in budget:
            limits["synchronisations"] = (cost.synchronisations, budget["synchronisations_if_none_kept"])
        elif "synchronisations" in budget:
            limits["synchronisations"] = (cost.synchronisations, budget["synchronisations"])
        # every upload is staged in pinned memory (queued behind running engines, never waiting for them)
        limits["pageable host-to-device bytes"] = (cost.host_to_device_pageable_bytes, 0)
        problems += [f"{cost.call}: {what} {v} > budget {lim}" for what, (v, lim) in limits.items() if v > lim]
    return problems


#: The one-prompt calls that run the decoder (and so copy results back); batch calls are named "N-prompt batch".
PROMPT_CALLS = ("first prompt", "extra prompt", "repeated prompt")
