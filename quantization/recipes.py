"""Quantization recipes: one small declarative JSON file per target and recipe.

``quantization/recipes/<target>/<recipe>.json`` says what precision each kind of layer gets, which
layers stay in float (mixed precision), and the parity thresholds the export must meet. Command-line
flags only override fields of a recipe.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

TARGETS = ("executorch-xnnpack", "executorch-coreml", "coreml", "onnx")


class RecipeError(ValueError):
    """Unknown target or recipe, or a recipe file with a bad field."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    min_snr_db: float
    lm_greedy_all_equal: bool
    lm_min_top1: float


@dataclasses.dataclass(frozen=True)
class Recipe:
    target: str
    name: str
    description: str
    weights: str  # fp32 | fp16 | int8 | int4 | palettize6
    thresholds: Thresholds
    activations: str = "float"
    granularity: str = "none"
    group_size: int | None = None
    keep_float: tuple[str, ...] = ()

    @property
    def quantized(self) -> bool:
        return self.weights not in ("fp32", "fp16")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["keep_float"] = list(self.keep_float)
        return out

    def override(self, group_size: int | None = None, keep_float: tuple[str, ...] | None = None) -> Recipe:
        changes: dict[str, Any] = {}
        if group_size is not None:
            if self.weights != "int4":
                raise RecipeError(f"--group-size applies to int4 recipes, not {self.name!r}")
            if group_size <= 0:
                raise RecipeError(f"--group-size must be a positive integer, got {group_size}")
            changes["group_size"] = group_size
        if keep_float is not None:
            changes["keep_float"] = tuple(keep_float)
        return dataclasses.replace(self, **changes)


def _recipe_dir(target: str):
    return resources.files("melody_edge.quantization").joinpath("recipes", target)


def available_recipes(target: str) -> list[str]:
    if target not in TARGETS:
        raise RecipeError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    folder = _recipe_dir(target)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_recipe(target: str, name: str) -> Recipe:
    names = available_recipes(target)
    if name not in names:
        valid = ", ".join(names) if names else "none on this host yet"
        raise RecipeError(f"unknown recipe {name!r} for target {target}; valid recipes: {valid}")
    path = _recipe_dir(target).joinpath(f"{name}.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecipeError(f"recipe {target}/{name}.json is not valid JSON: {exc}") from exc
    try:
        thresholds = Thresholds(**raw.pop("thresholds"))
        recipe = Recipe(target=target, name=name, thresholds=thresholds, **raw)
    except (KeyError, TypeError) as exc:
        raise RecipeError(f"recipe {target}/{name}.json: {exc}") from exc
    if recipe.weights == "int4" and not recipe.group_size:
        raise RecipeError(f"recipe {target}/{name}.json: int4 needs a group_size")
    return dataclasses.replace(recipe, keep_float=tuple(recipe.keep_float))
