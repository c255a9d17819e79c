"""ONNX export: the explicit-cache swap, every recipe on the tiny model, the unrolled sampler."""

from __future__ import annotations

import json

import pytest
import torch

from melody_edge.export.onnx_export import LMWithExplicitCache, cache_shape, replace_kv_cache_with_explicit
from melody_edge.runtime.manifest import load_manifest


def test_explicit_cache_swap_equals_buffer_cache(tiny_model):
    lm = tiny_model.lm
    swapped = LMWithExplicitCache(replace_kv_cache_with_explicit(lm), decode=False)
    step = LMWithExplicitCache(swapped.lm, decode=True)
    ids = torch.randint(0, lm.config.vocab_size, (1, 10))
    lm.reset_cache()
    with torch.no_grad():
        want = lm.prefill(ids, 0)
        want_next = lm.decode(torch.tensor([[3]]), 10)
        cache = torch.zeros(cache_shape(lm))
        got, cache = swapped(ids, torch.tensor([0]), cache)
        got_next, cache = step(torch.tensor([[3]]), torch.tensor([10]), cache)
    assert torch.equal(want, got)
    assert torch.equal(want_next, got_next)
    # The returned cache holds exactly what the buffers hold.
    assert torch.equal(cache[0, 0], lm.layers[0].cache.k)
    assert torch.equal(cache[-1, 1], lm.layers[-1].cache.v)
    # The original model is untouched by the swap.
    assert type(lm.layers[0].cache).__name__ == "KVCache"


@pytest.mark.parametrize("recipe", ["fp32", "int8", "int4"])
def test_onnx_bundle_passes_gate(bundle_factory, recipe):
    bundle = bundle_factory("onnx", recipe)
    manifest = load_manifest(bundle)
    report = json.loads((bundle / "parity.json").read_text())
    assert report["gate"]["passed"], report["gate"]["failures"]
    comps = report["components"]
    assert set(comps) == {"lm", "dpd", "vae_decoder"}
    floor = {"fp32": 60, "int8": 20, "int4": 15}[recipe]
    for name, by_ref in comps.items():
        assert by_ref["float"]["snr_db"] >= floor, name
        assert by_ref["float"]["nan_inf"] == 0
    if recipe == "fp32":
        assert comps["lm"]["float"]["greedy_match"] == 1.0
        assert manifest["recipe"]["quantized_layers"] == {}
    else:
        # Quantized bundles are compared with the quantized eager model too, and say what was quantized.
        assert "quantized_eager" in comps["dpd"]
        layers = manifest["recipe"]["quantized_layers"]["lm"]
        assert "lm.layers.0.ffn.w_gate" in layers and "lm.head" not in layers
    lm = manifest["components"]["lm"]
    assert set(lm["files"]) == {"prefill", "decode"}
    # The two LM graphs share one weights file instead of carrying every weight twice.
    assert lm["shared_weights"] == "lm.weights"
    files = manifest["files"]
    assert files["lm.prefill.onnx"]["bytes"] < files["lm.weights"]["bytes"] / 4
    assert [t["name"] for t in lm["methods"]["decode"]["inputs"]] == ["token", "pos", "cache"]


def test_quantized_onnx_is_smaller(bundle_factory):
    sizes = {}
    for recipe in ("fp32", "int8", "int4"):
        manifest = load_manifest(bundle_factory("onnx", recipe))
        sizes[recipe] = manifest["files"]["dpd.onnx"]["bytes"]
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]


def test_onnx_sampler_artifact_matches_eager(bundle_factory):
    bundle = bundle_factory("onnx", "fp32", sampler_artifact=True)
    report = json.loads((bundle / "parity.json").read_text())
    assert report["components"]["dpd_sampler"]["float"]["snr_db"] >= 60
    # Both forms were timed on this host and the manifest names the faster, with the figures.
    timing = report["sampler_timing"]
    assert timing["stepwise_ms"] > 0 and timing["unrolled_ms"] > 0 and timing["reps"] == 5
    sampler = load_manifest(bundle)["sampler"]
    faster = "unrolled" if timing["unrolled_ms"] < timing["stepwise_ms"] else "stepwise"
    assert sampler["preferred"] == faster == timing["preferred"]
    assert sampler["preferred_measured"]["stepwise_ms"] == timing["stepwise_ms"]


def test_quantized_onnx_sampler_quantizes_the_dpds_layers(bundle_factory):
    bundle = bundle_factory("onnx", "int8", sampler_artifact=True)
    manifest = load_manifest(bundle)
    layers = manifest["recipe"]["quantized_layers"]
    assert layers["dpd_sampler"] == layers["dpd"] and len(layers["dpd"]) > 10
    report = json.loads((bundle / "parity.json").read_text())
    sampler = report["components"]["dpd_sampler"]
    # Quantized for real: it departs from the float sampler (a float graph would match to > 100 dB).
    assert 20 <= sampler["float"]["snr_db"] < 80, sampler
    assert sampler["quantized_eager"]["snr_db"] >= 20
