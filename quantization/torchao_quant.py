"""Apply an ExecuTorch/XNNPACK recipe to a model with torchao (8da8w, 8da4w)."""

from __future__ import annotations

import copy
import fnmatch

import torch
from torch import nn

from .recipes import Recipe, RecipeError


def _kept(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") or fnmatch.fnmatch(name, p) for p in patterns)


def linear_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Linear]]:
    return [(f"{prefix}{n}", m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def check_group_size(model: nn.Module, group_size: int, keep_float: tuple[str, ...], prefix: str = "") -> None:
    """Refuse a group size that does not divide a quantized layer's input width, naming the layers."""
    bad = [
        f"{name} (in_features {m.in_features})"
        for name, m in linear_layers(model, prefix)
        if not _kept(name, keep_float) and m.in_features % group_size
    ]
    if bad:
        raise RecipeError(
            f"group size {group_size} does not divide the input width of {len(bad)} linear layer(s): "
            f"{', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}. Keep them in float (--keep-float NAME), "
            "or, for an int4 recipe, pick a group size that divides them (--group-size)."
        )


def quantize_for_xnnpack(module: nn.Module, recipe: Recipe, prefix: str) -> tuple[nn.Module, list[str]]:
    """A quantized copy of ``module`` and the names of the layers quantized.

    ``prefix`` is the component's name in the model (``lm.``, ``dpd.``) so that recipe patterns such
    as ``lm.head`` address layers the same way everywhere.
    """
    if not recipe.quantized:
        return module, []
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup, quantize_

    if recipe.weights == "int8":
        config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    elif recipe.weights == "int4":
        check_group_size(module, recipe.group_size, recipe.keep_float, prefix)
        config = Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4, weight_granularity=PerGroup(recipe.group_size)
        )
    else:
        raise RecipeError(f"weights {recipe.weights!r} are not an XNNPACK mode (fp32, int8, int4)")
    q = copy.deepcopy(module)
    chosen = [n for n, _ in linear_layers(q, prefix) if not _kept(n, recipe.keep_float)]
    wanted = set(chosen)
    quantize_(q, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and f"{prefix}{fqn}" in wanted)
    return q, chosen
