"""``label --ray`` on a local Ray cluster (2 CPUs): Ray Data's ``map_batches`` over a pool of actors writes the
same shards as one machine, also when an actor is killed mid-run (Ray restarts it and retries its batch).

The mechanism runs on the processor double (20 images, seconds); the tiny export's graphs run through the same
actors on ONNX Runtime, with a killed actor too, and equal the single-machine run on the graphs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from sam3_trt.datasets.label import LabelSettings, label  # noqa: E402
from sam3_trt.testing.label_double import KillOnce, LabelProcessorDouble  # noqa: E402

PROMPTS = ("cat", "red box", "dog")
SETTINGS = LabelSettings(threshold=0.15, max_detections=4, batch=2, shard_size=3)
IDENTITY = {"double": "LabelProcessorDouble"}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (2 CPUs: two actors), shut down after."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def outputs(out: Path) -> tuple[str, ...]:
    return tuple((out / name).read_text() for name in ("results.json", "dataset.json", "errors.jsonl"))


def test_two_actors_with_one_killed_mid_run_equal_one_machine(cluster, image_set, tmp_path):
    local = tmp_path / "local"
    label(image_set, local, processor=LabelProcessorDouble(), identity=IDENTITY, prompts=PROMPTS, settings=SETTINGS)

    marker = tmp_path / "killed"
    out = tmp_path / "ray"
    summary = label(
        image_set, out, make_processor=KillOnce(LabelProcessorDouble, str(marker), after=2), identity=IDENTITY,
        prompts=PROMPTS, settings=SETTINGS, ray="auto", actors=2,
    )  # fmt: skip
    assert marker.exists(), "no actor was killed: the fault path did not run"
    assert summary["complete"] and summary["done_now"] == 23 and summary["errors"] == 3
    assert outputs(out) == outputs(local)


def test_a_driver_killed_run_resumes_on_ray_from_its_shards(cluster, image_set, tmp_path):
    """Shards written by a single-machine run that stopped are kept; Ray does the rest, outputs equal."""
    local = tmp_path / "local"
    label(image_set, local, processor=LabelProcessorDouble(), identity=IDENTITY, prompts=PROMPTS, settings=SETTINGS)
    out = tmp_path / "mixed"
    label(image_set, out, processor=LabelProcessorDouble(), identity=IDENTITY, prompts=PROMPTS, settings=SETTINGS,
          shard=(0, 2))  # fmt: skip
    summary = label(image_set, out, make_processor=LabelProcessorDouble, identity=IDENTITY, prompts=PROMPTS,
                    settings=SETTINGS, ray="auto", actors=2)  # fmt: skip
    assert summary["resumed_images"] > 0 and summary["complete"]
    assert outputs(out) == outputs(local)


def test_graphs_on_ray_with_a_killed_actor_equal_the_single_machine_run(cluster, tiny_export, image_set, tmp_path):
    from sam3_trt import Sam3Processor

    export, _ = tiny_export
    listing = tmp_path / "list.txt"
    names = ("a/img09_gray.png", "b/c/img07.jpg", "broken/truncated.png", "img02_rgba.png")  # 3 good, 1 bad
    listing.write_text("\n".join(str(image_set / n) for n in names) + "\n")
    # one ONNX Runtime thread per processor (two actors share two cores), the same on both sides
    factory = functools.partial(Sam3Processor, str(export), backend="onnxruntime", threads=1)
    settings = LabelSettings(threshold=0.38, max_detections=20, batch=1, shard_size=2)
    kw = {"prompts": PROMPTS[:1], "settings": settings, "identity": {"export": str(export), "threads": 1}}
    local = label(listing, tmp_path / "local", processor=factory(), **kw)
    marker = tmp_path / "killed"
    on_ray = label(listing, tmp_path / "ray", make_processor=KillOnce(factory, str(marker), after=2), ray="auto",
                   actors=2, **kw)  # fmt: skip
    assert marker.exists(), "no actor was killed: the fault path did not run"
    assert on_ray["complete"] and on_ray["detections"] == local["detections"] > 0 and on_ray["errors"] == 1
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
