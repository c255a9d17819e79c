"""ExecuTorch XNNPACK export of the tiny model, every recipe, behind the parity gate."""

from __future__ import annotations

import json

import pytest

from melody_edge.runtime.manifest import load_manifest


@pytest.mark.parametrize("recipe", ["fp32", "int8", "int4"])
def test_xnnpack_bundle_passes_gate(bundle_factory, recipe):
    bundle = bundle_factory("executorch-xnnpack", recipe)
    manifest = load_manifest(bundle)
    report = json.loads((bundle / "parity.json").read_text())
    assert report["gate"]["passed"], report["gate"]["failures"]
    floor = {"fp32": 60, "int8": 20, "int4": 15}[recipe]
    for name, by_ref in report["components"].items():
        assert by_ref["float"]["snr_db"] >= floor, name
        assert by_ref["float"]["nan_inf"] == 0
    lm = manifest["components"]["lm"]
    assert set(lm["methods"]) == {"prefill", "decode"}
    assert "mutable buffers" in lm["state"]
    if recipe == "fp32":
        assert report["components"]["lm"]["float"]["greedy_match"] == 1.0
    else:
        assert "quantized_eager" in report["components"]["lm"]
        assert manifest["recipe"]["kept_float"] == ["lm.head", "dpd.in_proj", "dpd.out_proj"]
