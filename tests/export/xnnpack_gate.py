"""The XNNPACK gate checks, shared by the recipe tests (split across files so pytest-xdist runs the slow
quantized exports on different workers)."""

from __future__ import annotations

import json
from pathlib import Path

from melody_edge.runtime.manifest import load_manifest


def check_xnnpack_bundle(bundle: Path, recipe: str) -> None:
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
    # Every lowered graph says which equal-function swaps it went through (export/xnnpack_swaps.py).
    for name in ("lm", "dpd", "vae_decoder"):
        assert manifest["components"][name]["export_form"].startswith("export/xnnpack_swaps.py prepare_"), name
    if recipe == "fp32":
        assert report["components"]["lm"]["float"]["greedy_match"] == 1.0
    else:
        assert "quantized_eager" in report["components"]["lm"]
        kept = ["lm.head", "dpd.in_proj", "dpd.prior_proj", "dpd.out_proj"]
        if recipe == "int4":  # blocks of 32: the demo DPD's 140-wide token-feature projection stays float too
            kept.insert(3, "dpd.token_feature_proj")
        assert manifest["recipe"]["kept_float"] == kept
