"""Recipe files: every one loads, thresholds follow the issue's defaults, overrides are checked."""

from __future__ import annotations

import pytest

from melody_edge.quantization.recipes import TARGETS, RecipeError, available_recipes, load_recipe

DEFAULT_FLOOR = {"fp32": 60.0, "fp16": 35.0, "int8": 20.0, "int4": 15.0}


@pytest.mark.parametrize("target", TARGETS)
def test_every_recipe_file_loads(target):
    for name in available_recipes(target):
        recipe = load_recipe(target, name)
        assert recipe.target == target and recipe.name == name
        if recipe.weights in DEFAULT_FLOOR:
            assert recipe.thresholds.min_snr_db == DEFAULT_FLOOR[recipe.weights]
        if recipe.weights == "fp32":
            assert recipe.thresholds.lm_greedy_all_equal


def test_host_targets_have_recipes():
    assert available_recipes("executorch-xnnpack") == ["fp32", "int4", "int8"]
    assert available_recipes("onnx") == ["fp32", "int4", "int8"]


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(RecipeError, match="valid recipes: fp32, int4, int8"):
        load_recipe("onnx", "int2")
    with pytest.raises(RecipeError, match="valid targets: executorch-xnnpack"):
        load_recipe("tpu", "fp32")


def test_overrides_are_checked():
    with pytest.raises(RecipeError, match="--group-size applies to int4"):
        load_recipe("onnx", "int8").override(group_size=64)
    with pytest.raises(RecipeError, match="positive"):
        load_recipe("onnx", "int4").override(group_size=0)
    assert load_recipe("onnx", "int4").override(group_size=64).group_size == 64
    assert load_recipe("onnx", "fp32").override(keep_float=("lm.head",)).keep_float == ("lm.head",)


@pytest.mark.parametrize("config", ["tiny", "demo", "edge", "paper"])
def test_block_recipes_fit_every_built_in_config(config):
    # The demo DPD's token_feature_proj (140 wide) once reached torchao's own assertion through onnx/int8.
    from melody_edge.models.melody import build_model, preset
    from melody_edge.quantization.torchao_quant import check_group_size

    model = build_model(preset(config), seed=0)
    for target in TARGETS:
        for name in available_recipes(target):
            recipe = load_recipe(target, name)
            if recipe.quantized and recipe.group_size:
                check_group_size(model.lm, recipe.group_size, recipe.keep_float, "lm.")
                check_group_size(model.dpd, recipe.group_size, recipe.keep_float, "dpd.")


def test_onnx_int8_refuses_a_layer_its_blocks_do_not_divide_naming_it():
    from melody_edge.export.onnx_export import check_onnx_blocks
    from melody_edge.models.melody import build_model, preset

    model = build_model(preset("demo"), seed=0)
    recipe = load_recipe("onnx", "int8")
    check_onnx_blocks(model, recipe)  # the shipped recipe keeps it float
    loose = recipe.override(keep_float=tuple(k for k in recipe.keep_float if k != "dpd.token_feature_proj"))
    with pytest.raises(RecipeError, match=r"dpd.token_feature_proj \(in_features 140\).*--keep-float"):
        check_onnx_blocks(model, loose)
