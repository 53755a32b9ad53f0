"""What a labelling run reads: image sources in canonical order, prompts, per-image lines; each refusal in one line."""

from __future__ import annotations

import json

import pytest

from sam3_trt.datasets.inputs import collect_images, plan_tasks, read_per_image, read_prompts, tasks_digest
from sam3_trt.datasets.label import LabelSettings, parse_shard
from sam3_trt.errors import Sam3TrtError
from sam3_trt.testing.drawn_images import BAD_IMAGES


def test_a_folder_a_glob_a_list_and_a_coco_file_name_the_same_images_in_one_order(image_set, tmp_path):
    folder = collect_images(image_set)
    names = [it.file_name for it in folder]
    assert names == sorted(names) and len(names) == 23  # 20 drawn + 3 bad; notes.txt is not an image
    assert [it.image_id for it in folder] == list(range(1, 24))
    assert set(BAD_IMAGES) <= set(names)

    pngs = collect_images(f"{image_set}/**/*.png")
    assert [it.file_name for it in pngs] == [n for n in names if n.endswith(".png")]

    listing = tmp_path / "list.txt"
    listing.write_text("# chosen\n" + "\n".join(str(image_set / n) for n in names[:3]) + "\n\n")
    assert [it.path for it in collect_images(listing)] == [str(image_set / n) for n in names[:3]]

    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 40, "file_name": names[1]}, {"id": 7, "file_name": names[0]}]}))
    from_coco = collect_images(coco, image_root=image_set)
    assert [(it.image_id, it.file_name) for it in from_coco] == [(7, names[0]), (40, names[1])]
    assert from_coco[0].path == str(image_set / names[0])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: str(p / "missing"), "no such folder, file or matching glob"),
        (lambda p: str(p / "*.nothing"), "holds no image"),
        (lambda p: (p / "empty").mkdir() or str(p / "empty"), "holds no image"),
        (lambda p: (p / "l.txt").write_text("a.png\nb.png\na.png\n") and str(p / "l.txt"), "listed twice"),
        (lambda p: (p / "c.json").write_text('{"images": [{"id": 1}]}') and str(p / "c.json"), "file_name"),
        (
            lambda p: (
                (p / "d.json").write_text('{"images": [{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}]}')
                and str(p / "d.json")
            ),
            "more than once",
        ),
    ],
)
def test_a_bad_source_is_refused_in_one_line(tmp_path, make, message):
    with pytest.raises(Sam3TrtError, match=message) as info:
        collect_images(make(tmp_path))
    assert "\n" not in str(info.value)


def test_prompts_from_options_and_a_file_each_once(tmp_path):
    file = tmp_path / "prompts.txt"
    file.write_text("dog\n# a comment\n\ncat  # trailing comment\nperson\n")
    assert read_prompts(["cat", "car"], file) == ["cat", "car", "dog", "person"]
    with pytest.raises(Sam3TrtError, match="no such file"):
        read_prompts([], tmp_path / "nope.txt")
    with pytest.raises(Sam3TrtError, match="non-empty"):
        read_prompts(["  "])


def test_per_image_prompts_and_boxes_become_tasks_and_categories(image_set, tmp_path):
    items = collect_images(image_set)
    lines = tmp_path / "per.jsonl"
    lines.write_text(
        json.dumps({"image": items[0].file_name, "prompts": ["bus"], "boxes": [[1, 2, 30, 40], [0, 0, 5, 5, "neg"]]})
        + "\n"
        + json.dumps({"image": items[2].path, "boxes": [[1, 1, 9, 9]]})
        + "\n"
    )
    per = read_per_image(lines, items)
    tasks, categories = plan_tasks(items, ["cat", "dog"], per)
    assert categories == ["cat", "dog", "bus"]
    assert tasks[0].prompts == ("bus",) and tasks[0].category_ids == (3,)
    assert tasks[0].boxes == ((1.0, 2.0, 30.0, 40.0, True), (0.0, 0.0, 5.0, 5.0, False))
    assert tasks[2].prompts == ("cat", "dog") and len(tasks[2].boxes) == 1  # boxes alone: the run's prompts
    assert tasks[1].prompts == ("cat", "dog") and tasks[1].boxes == ()
    # the digest follows every input that changes outputs
    other, _ = plan_tasks(items, ["cat", "dog"])
    assert tasks_digest(tasks, categories) != tasks_digest(other, ["cat", "dog"])
    with pytest.raises(Sam3TrtError, match="has no prompt"):
        plan_tasks(items, [], per)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{nope", "not JSON"),
        ('{"prompts": ["a"]}', "needs"),
        ('{"image": "elsewhere.png"}', "not among the run's images"),
        ('{"image": "%s", "prompts": "cat"}', "list of non-empty strings"),
        ('{"image": "%s", "boxes": [[5, 5, 1, 1]]}', "x1 > x0"),
        ('{"image": "%s", "boxes": [[0, 0, "a", 1]]}', "must be"),
        ('{"image": "%s", "boxes": [[0, 0, 1, 1, "maybe"]]}', "must be"),
        ('{"image": "%s"}\n{"image": "%s"}', "appears twice"),
    ],
)
def test_a_bad_per_image_line_is_refused_naming_file_and_line(image_set, tmp_path, line, message):
    items = collect_images(image_set)
    name = items[0].file_name
    path = tmp_path / "per.jsonl"
    path.write_text(line.replace("%s", name) + "\n")
    with pytest.raises(Sam3TrtError, match=message) as info:
        read_per_image(path, items)
    assert f"{path}:" in str(info.value)


def test_settings_and_shard_specs_are_checked():
    LabelSettings().check()
    for bad, message in (
        (LabelSettings(threshold=1.5), "--threshold"),
        (LabelSettings(max_detections=0), "--max-detections 0"),
        (LabelSettings(batch=0), "--batch 0"),
        (LabelSettings(shard_size=-1), "--shard-size -1"),
    ):
        with pytest.raises(Sam3TrtError, match=message):
            bad.check()
    assert parse_shard(None) == (0, 1) and parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(Sam3TrtError, match="i/n"):
            parse_shard(bad)
