"""Model building and checkpoint loading (official sam3.pt layout, saved by the tests themselves)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam3")

from sam3_trt.errors import Sam3TrtError  # noqa: E402
from sam3_trt.export.model import build_model, load_model, read_checkpoint, save_checkpoint  # noqa: E402


def test_random_weights_are_deterministic_and_finite(tiny_model):
    model, origin = tiny_model
    again = build_model("tiny", seed=0)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point())
    other = build_model("tiny", seed=1).state_dict()
    assert not torch.equal(
        a["backbone.language_backbone.encoder.positional_embedding"],
        other["backbone.language_backbone.encoder.positional_embedding"],
    )
    assert origin.kind == "random" and origin.seed == 0


def test_tiny_uses_the_same_classes_smaller(tiny_model):
    model, _ = tiny_model
    trunk = model.backbone.vision_backbone.trunk
    assert type(trunk).__name__ == "ViT" and len(trunk.blocks) == 2
    assert sum(p.numel() for p in model.parameters()) < 30e6


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, tiny_model, suffix):
    model, _ = tiny_model
    path = tmp_path / f"sam3{suffix}"
    save_checkpoint(model, path)
    state = read_checkpoint(path)
    assert not any(k.startswith(("detector.", "tracker.")) for k in state)
    loaded, origin = load_model("tiny", checkpoint=path, seed=5)  # seed 5: random init differs from the file
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert origin.kind == "checkpoint" and len(origin.sha256) == 64 and origin.missing_keys == ()


def test_missing_keys_fail_unless_allowed(tmp_path, tiny_model):
    model, _ = tiny_model
    state = {f"detector.{k}": v for k, v in model.state_dict().items() if "segmentation_head" not in k}
    path = tmp_path / "partial.pt"
    torch.save({"model": state}, path)
    with pytest.raises(Sam3TrtError, match=r"partial.pt is missing \d+ of the model's .*--allow-missing"):
        load_model("tiny", checkpoint=path)
    _, origin = load_model("tiny", checkpoint=path, allow_missing=True)
    assert origin.missing_keys and all("segmentation_head" in k for k in origin.missing_keys)


def test_unexpected_keys_are_reported(tmp_path, tiny_model):
    model, _ = tiny_model
    state = {f"detector.{k}": v for k, v in model.state_dict().items()}
    state["detector.not_a_layer.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pt"
    torch.save({"model": state}, path)
    _, origin = load_model("tiny", checkpoint=path)
    assert origin.unexpected_keys == ("not_a_layer.weight",)


def test_wrong_variant_checkpoint_names_the_shapes(tmp_path, tiny_model):
    model, _ = tiny_model
    state = {
        f"detector.{k}": (v[..., :1] if v.ndim and "resizer.weight" in k else v) for k, v in model.state_dict().items()
    }
    path = tmp_path / "shapes.pt"
    torch.save({"model": state}, path)
    with pytest.raises(Sam3TrtError, match=r"wrong shape.*--variant"):
        load_model("tiny", checkpoint=path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "checkpoint not found"),
        (b"\x00garbage" * 10, "could not read checkpoint"),
        ("wrong_keys", "no image-model weights"),
    ],
)
def test_bad_checkpoints_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "wrong_keys":
        torch.save({"model": {"encoder.weight": torch.zeros(1)}}, path)
    with pytest.raises(Sam3TrtError, match=message) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_exactly_one_weights_source():
    with pytest.raises(Sam3TrtError, match="exactly one weights source"):
        load_model("tiny")
    with pytest.raises(Sam3TrtError, match="exactly one weights source"):
        load_model("tiny", random_weights=True, from_hf=True)


def test_unknown_variant():
    with pytest.raises(Sam3TrtError, match="unknown variant 'huge'"):
        build_model("huge")


def test_a_checkpoint_is_checked_against_the_one_the_artifacts_came_from(tmp_path):
    """The one check behind ``--checkpoint`` (parity, bench) and ``build_sam3_image_model(checkpoint_path=)``:
    random-weight artifacts and a file with another sha256 are refused in one line; the recorded file passes."""
    from sam3_trt.export.model import check_checkpoint_origin, model_from_manifest, sha256_file

    ours, other = tmp_path / "sam3.pt", tmp_path / "other.pt"
    ours.write_bytes(b"the exported weights")
    other.write_bytes(b"some other weights")
    recorded = {"kind": "checkpoint", "variant": "full", "path": str(ours), "sha256": sha256_file(ours)}
    check_checkpoint_origin(recorded, ours, "--checkpoint", "these artifacts", "unused")
    with pytest.raises(Sam3TrtError) as info:
        check_checkpoint_origin(recorded, other, "--checkpoint", "these artifacts", "unused")
    line = str(info.value)
    assert f"--checkpoint {other} is not the checkpoint these artifacts came from" in line and "\n" not in line
    assert recorded["sha256"][:12] in line
    with pytest.raises(Sam3TrtError, match=r"came from random weights \(seed 3\); rebuild from the seed"):
        check_checkpoint_origin(
            {"kind": "random", "variant": "tiny", "seed": 3}, ours, "x", "y", "rebuild from the seed"
        )
    # the reference builder: another file in place of the recorded one is refused before anything is built
    ours.write_bytes(b"replaced since the export")
    with pytest.raises(Sam3TrtError, match="is not the checkpoint these artifacts came from"):
        model_from_manifest({"weights": recorded})
    with pytest.raises(Sam3TrtError, match=f"--checkpoint {other} is not the checkpoint"):
        model_from_manifest({"weights": recorded}, checkpoint=other)
    # and the tracker's reference (bench --clicks), from the video entry's record
    from sam3_trt.export.tracker_model import tracker_from_manifest

    with pytest.raises(
        Sam3TrtError, match=r"recorded tracker checkpoint .* is not the checkpoint these artifacts' tracker"
    ):
        tracker_from_manifest({"video": {"weights": recorded}})
