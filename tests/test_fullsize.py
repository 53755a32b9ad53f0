"""The real artifact: the full-size sam3 architecture (random weights) exported once, with every check."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("sam3")

from sam3_trt.manifest import verify_files
from sam3_trt.specs import SPECS

pytestmark = pytest.mark.fullsize


def test_full_export_passes_parity_on_every_output(full_export):
    out, manifest = full_export
    verify_files(out, manifest)
    assert manifest["weights"]["variant"] == "full" and manifest["weights"]["kind"] == "random"
    assert 800e6 < manifest["model"]["parameters"] < 900e6
    parity = manifest["checks"]["parity"]
    assert parity["passed"] is True, [c for c in parity["cases"] if not c["passed"]]
    graphs = {c["graph"] for c in parity["cases"]}
    assert graphs == {"vision_encoder", "text_encoder", "decoder", "pipeline"}
    for case in parity["cases"]:
        for o in case["outputs"]:
            assert o["rel_l2"] <= 1e-4, (case["graph"], case["case"], o)


def test_full_graphs_parse_with_tensorrt_for_rtx(full_export):
    _, manifest = full_export
    rtx = manifest["checks"]["rtx_parse"]
    if rtx["status"] == "skipped":
        pytest.skip(rtx["reason"])
    assert rtx["status"] == "passed"
    assert {n: r["errors"] for n, r in rtx["graphs"].items()} == {n: [] for n in SPECS}


def test_vision_graph_uses_external_data(full_export):
    out, manifest = full_export
    entry = manifest["graphs"]["vision_encoder"]
    assert (out / entry["file"]).stat().st_size < 50e6  # weights live in the .data file
    assert entry["bytes"] > 1.5e9
