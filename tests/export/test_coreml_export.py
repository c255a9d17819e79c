"""Core ML export of the tiny model: conversion, compression and structural validation.

Core ML cannot predict on Linux, so these tests check what can be checked here: the swapped LM is
exact in PyTorch, the packages carry the bundle's names/shapes/dtypes and the KV-cache state, the
weights shrink by what each recipe promises, and the validation says Core ML was not run.
To stay fast, fp32 converts every component and each compressed recipe converts one cheap one.
"""

from __future__ import annotations

import dataclasses
import platform

import pytest
import torch

pytest.importorskip("coremltools")

from melody_edge.export import adapters
from melody_edge.export.coreml_export import export_coreml_components, replace_kv_cache_with_slice_update
from melody_edge.models.melody import load_model
from melody_edge.quantization.recipes import RecipeError, available_recipes, load_recipe

pytestmark = pytest.mark.skipif(platform.system() == "Darwin", reason="asserts the not-run path of non-Apple hosts")


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny").eval()


@pytest.fixture(scope="module")
def specs(tiny):
    return adapters.method_specs(tiny, 32, 4)


def export(tiny, specs, tmp_path_factory, target, recipe, only=None):
    out = tmp_path_factory.mktemp(f"{target}-{recipe.name}")
    lines: list[str] = []
    components, quantized, validation = export_coreml_components(
        tiny, target, recipe, out, specs, 4, False, False, lines.append, only=only
    )
    return out, components, quantized, validation, lines


@pytest.fixture(scope="module")
def fp32(tiny, specs, tmp_path_factory):
    return export(tiny, specs, tmp_path_factory, "coreml", load_recipe("coreml", "fp32"))


@torch.no_grad()
def test_slice_update_lm_gives_exactly_the_original_logits(tiny):
    torch.manual_seed(0)
    swapped = replace_kv_cache_with_slice_update(tiny.lm)
    ids = torch.randint(0, 1024, (1, 32))
    for lm in (tiny.lm, swapped):
        lm.reset_cache()
    for start in (0, 5, 230):  # rewrites earlier slots, as the streaming window does
        assert torch.equal(tiny.lm.prefill(ids, torch.tensor([start])), swapped.prefill(ids, torch.tensor([start])))
    for pos in (37, 38, 261):
        token = torch.tensor([[pos % 1024]])
        assert torch.equal(tiny.lm.decode(token, torch.tensor([pos])), swapped.decode(token, torch.tensor([pos])))
    for a, b in zip(tiny.lm.layers, swapped.layers):
        assert torch.equal(a.cache.k, b.cache.k) and torch.equal(a.cache.v, b.cache.v)
    assert type(tiny.lm.layers[0].cache).__name__ == "KVCache"  # the model itself is untouched
    tiny.lm.reset_cache()


def test_fp32_packages_match_the_method_specs_and_are_reported_not_run(fp32, specs):
    out, components, quantized, validation, lines = fp32
    assert sorted(p.name for p in out.iterdir()) == ["dpd.mlpackage", "lm.mlpackage", "vae_decoder.mlpackage"]
    assert validation["run"] is False and "macOS" in validation["reason"]
    assert validation["structural_ok"], validation
    assert quantized == {}
    lm = components["lm"]
    assert lm["file"] == "lm.mlpackage" and "state" in lm and list(lm["methods"]) == ["prefill", "decode"]
    # Core ML has no int64 tensors: the manifest tells apps to feed int32.
    assert lm["methods"]["prefill"]["inputs"] == [
        {"name": "ids", "shape": [1, 32], "dtype": "int32"},
        {"name": "start_pos", "shape": [1], "dtype": "int32"},
    ]
    assert components["dpd"]["methods"]["forward"]["outputs"] == specs["dpd"]["forward"].to_dict()["outputs"]
    for name, v in validation["components"].items():
        assert v["inputs_ok"] and v["outputs_ok"] and v["state_ok"] and not v["failures"], (name, v)
        assert 0.99 <= v["ratio"] <= 1.05, (name, v["ratio"])
    # prefill and decode are two functions of ONE package, sharing weights and the KV-cache state.
    assert validation["components"]["lm"]["functions"] == ["prefill", "decode"]
    assert any("lm.mlpackage" in line and "MB" in line for line in lines)


def test_fp16_halves_the_weights(tiny, specs, tmp_path_factory):
    _, _, _, validation, _ = export(
        tiny, specs, tmp_path_factory, "coreml", load_recipe("coreml", "fp16"), ["vae_decoder"]
    )
    v = validation["components"]["vae_decoder"]
    assert v["inputs_ok"] and v["outputs_ok"] and not v["failures"]
    assert 0.48 <= v["ratio"] <= 0.56 and v["const_dtypes"].keys() == {"FLOAT16"}


def test_int8_lm_is_one_stateful_package_with_compressed_shared_weights(tiny, specs, tmp_path_factory):
    recipe = load_recipe("coreml", "int8")
    out, components, quantized, validation, _ = export(tiny, specs, tmp_path_factory, "coreml", recipe, ["lm"])
    v = validation["components"]["lm"]
    assert v["inputs_ok"] and v["outputs_ok"] and v["state_ok"] and not v["failures"], v
    assert v["functions"] == ["prefill", "decode"] and components["lm"]["file"] == "lm.mlpackage"
    assert [p.name for p in out.iterdir()] == ["lm.mlpackage"]  # no per-method leftovers in the bundle
    assert "lm.head" not in quantized["lm"] and "lm.embed" in quantized["lm"]
    assert v["compressed_layers"] == quantized["lm"] and len(quantized["lm"]) == 15
    # ~0.27: int8 everywhere but the float16 head. Had the two functions not shared their weights it would be ~0.55.
    assert 0.24 <= v["ratio"] <= 0.30, v["ratio"]


def test_int4_and_palettize6_compress_convolutions_too(tiny, specs, tmp_path_factory):
    # The recipes keep the VAE in float; overriding that shows both compressors on convolutions.
    int4 = load_recipe("coreml", "int4").override(keep_float=(), group_size=8)
    _, _, q4, v4, _ = export(tiny, specs, tmp_path_factory, "coreml", int4, ["vae_decoder"])
    pal = load_recipe("coreml", "palettize6").override(keep_float=())
    _, _, q6, v6, _ = export(tiny, specs, tmp_path_factory, "coreml", pal, ["vae_decoder"])
    for q, v in ((q4, v4), (q6, v6)):
        c = v["components"]["vae_decoder"]
        assert not c["failures"] and c["compressed_layers"] == q["vae_decoder"] and len(q["vae_decoder"]) > 10, c
    assert v4["components"]["vae_decoder"]["ratio"] < 0.25  # int4 + a float16 scale per 8 weights
    assert v6["components"]["vae_decoder"]["ratio"] < 0.30  # 6-bit indices + 64-entry tables


def test_foreseeable_recipe_errors_are_recipe_errors(tiny, specs, tmp_path_factory):
    # int4 blocks of 32 do not divide the VAE's 8- and 16-channel convolutions.
    bad_block = load_recipe("coreml", "int4").override(keep_float=())
    with pytest.raises(RecipeError, match=r"does not divide.*vae\.decoder"):
        export(tiny, specs, tmp_path_factory, "coreml", bad_block, ["vae_decoder"])
    palettized = dataclasses.replace(load_recipe("coreml", "palettize6"), target="executorch-coreml")
    with pytest.raises(RecipeError, match=r"palettize6.*cannot be built for executorch-coreml"):
        export(tiny, specs, tmp_path_factory, "executorch-coreml", palettized, ["vae_decoder"])
    with pytest.raises(RecipeError, match="is for coreml"):
        export(tiny, specs, tmp_path_factory, "executorch-coreml", load_recipe("coreml", "fp32"))
    assert available_recipes("executorch-coreml") == ["fp16", "fp32", "int4", "int8"]
    assert available_recipes("coreml") == ["fp16", "fp32", "int4", "int8", "palettize6"]


def test_executorch_coreml_pte_loads_and_delegates_to_core_ml(tiny, specs, tmp_path_factory):
    recipe = load_recipe("executorch-coreml", "fp32")
    out, components, _, validation, _ = export(
        tiny, specs, tmp_path_factory, "executorch-coreml", recipe, ["vae_decoder"]
    )
    assert [p.name for p in out.iterdir()] == ["vae_decoder.pte"]
    assert components["vae_decoder"]["methods"]["forward"] == specs["vae_decoder"]["forward"].to_dict()
    v = validation["components"]["vae_decoder"]
    assert validation["run"] is False and "macOS" in validation["reason"]
    assert v["loads"] and v["inputs_ok"] and v["outputs_ok"] and not v["failures"], v
    assert v["delegates"]["forward"]["coreml"] == 1 and v["delegates"]["forward"]["portable_ops"] == []
    assert 0.99 <= v["ratio"] <= 1.05


def test_the_core_ml_backend_refuses_to_run_off_apple_platforms(fp32):
    from melody_edge.runtime.coreml_backend import CoreMLBackend
    from melody_edge.runtime.open import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="macOS"):
        CoreMLBackend(fp32[0], {})


def test_executorch_coreml_int8_lm_delegates_with_compressed_weights_and_the_check_can_fail(
    tiny, specs, tmp_path_factory
):
    from melody_edge.export.coreml_validate import validate_pte

    recipe = load_recipe("executorch-coreml", "int8")
    out, _, quantized, validation, _ = export(tiny, specs, tmp_path_factory, "executorch-coreml", recipe, ["lm"])
    v = validation["components"]["lm"]
    assert v["loads"] and v["inputs_ok"] and v["outputs_ok"] and not v["failures"], v
    assert set(v["delegates"]) == {"prefill", "decode"}
    assert all(d["coreml"] >= 1 for d in v["delegates"].values()), v["delegates"]
    assert len(quantized["lm"]) > 5 and v["compressed_weights"] >= len(quantized["lm"]), (quantized, v)
    assert v["ratio"] < 0.5, v["ratio"]
    methods = specs["lm"]
    # The same program checked against recipes it does not follow: each mismatch is named.
    fp32_claim = validate_pte(out / "lm.pte", methods, load_recipe("executorch-coreml", "fp32"))
    assert any("fp32 recipe, but some weights are stored below 32 bits" in f for f in fp32_claim["failures"])
    int4_claim = validate_pte(out / "lm.pte", methods, load_recipe("executorch-coreml", "int4"), quantized["lm"])
    assert any("not as the int4 recipe says" in f for f in int4_claim["failures"]), int4_claim["failures"]


def test_executorch_coreml_check_fails_a_quantized_recipe_on_float_weights(tiny, specs, tmp_path_factory):
    from melody_edge.export.coreml_validate import validate_pte

    recipe = load_recipe("executorch-coreml", "fp32")
    out, _, _, _, _ = export(tiny, specs, tmp_path_factory, "executorch-coreml", recipe, ["vae_decoder"])
    claimed = validate_pte(
        out / "vae_decoder.pte", specs["vae_decoder"], load_recipe("executorch-coreml", "int8"), ["a", "b"]
    )
    assert any("hold 0 compressed weight(s): the rest are stored as float" in f for f in claimed["failures"])
    assert any("float32 constants in a float16-compute recipe" in f for f in claimed["failures"])


def test_guided_lm_converts_with_a_two_row_state_and_the_same_method_shapes(tiny, specs, tmp_path_factory, null_codes):
    from melody_edge.models.melody import with_lm_guidance

    guided = with_lm_guidance(tiny, 3.0, null_codes)
    recipe = load_recipe("coreml", "fp16")
    _, _, _, validation, _ = export(guided, specs, tmp_path_factory, "coreml", recipe, ["lm"])
    v = validation["components"]["lm"]
    assert v["inputs_ok"] and v["outputs_ok"] and v["state_ok"] and not v["failures"], v
    # The state check compares the package's cache with [cache_batch_size, H, S, Dh] of the guided LM.
    assert guided.streaming_lm().config.cache_batch_size == 2
