"""Per-layer sensitivity: one layer quantized at a time, most sensitive first."""

from __future__ import annotations

import torch

from melody_edge.quantization.recipes import load_recipe
from melody_edge.quantization.sensitivity import layer_sensitivity, quantize_one


def test_quantize_one_touches_only_that_layer(tiny_model):
    lm = tiny_model.lm
    q = quantize_one(lm, "layers.0.ffn.w_up", load_recipe("executorch-xnnpack", "int8"))
    assert type(q.layers[0].ffn.w_up.weight).__name__ != "Parameter"
    assert type(q.layers[0].ffn.w_down.weight).__name__ == "Parameter"
    assert type(lm.layers[0].ffn.w_up.weight).__name__ == "Parameter"  # the original is untouched


def test_sensitivity_rows_are_sorted_and_name_unquantizable_layers(tiny_model):
    import copy

    dpd = copy.deepcopy(tiny_model.dpd)
    d = dpd.config
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a fresh model's centroid projection is zero (nothing to quantize); a trained one is not
        dpd.token_feature_proj.weight.normal_(0.0, 0.05, generator=g)
    z = torch.randn(2, d.latent_channels, d.window_frames, generator=g)
    angles = torch.rand(2, d.window_frames, generator=g)
    tokens = torch.randint(0, d.token_vocab, (2, d.window_tokens), generator=g)
    rows = layer_sensitivity(dpd, "dpd.", lambda m: m(z, angles, tokens), load_recipe("onnx", "int4"))
    scored = [r["snr_db"] for r in rows[:-1] if r["snr_db"] is not None]
    assert scored == sorted(scored) and len(scored) > 10
    assert all(s < 200 for s in scored)  # every quantized layer really changed the output
    in_proj = next(r for r in rows if r["layer"] == "dpd.in_proj")
    assert in_proj["snr_db"] is None and "not divisible by group size 32" in in_proj["note"]
    assert rows[-1]["layer"] == "(all quantized)" and rows[-1]["snr_db"] < scored[-1]
