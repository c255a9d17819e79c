"""Per-layer quantization sensitivity: the component's SNR with only one layer quantized.

Run in eager PyTorch with torchao applying the recipe's weight scheme to one ``nn.Linear`` at a
time, on realistic inputs (the LM on a sequence it generated, the DPD on the sampler's trajectory).
Layers with the lowest SNR are the ones to keep in float (``--keep-float``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .recipes import Recipe, RecipeError
from .torchao_quant import _kept, linear_layers


def _config(recipe: Recipe):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, PerAxis, PerGroup

    dtype = {"int8": torch.int8, "int4": torch.int4}.get(recipe.weights)
    if dtype is None:
        return None
    granularity = PerGroup(recipe.group_size) if recipe.group_size else PerAxis(0)
    if recipe.activations == "int8-dynamic":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity)
    return IntxWeightOnlyConfig(weight_dtype=dtype, granularity=granularity)


def quantize_one(module: nn.Module, layer: str, recipe: Recipe) -> nn.Module:
    """A copy of ``module`` with only ``layer`` (a path inside ``module``) quantized by ``recipe``."""
    q = copy.deepcopy(module)
    if recipe.weights in ("fp16",):
        lin = q.get_submodule(layer)
        lin.weight.data = lin.weight.data.half().float()
        return q
    if recipe.weights == "palettize6":
        lin = q.get_submodule(layer)
        lin.weight.data = _palettize(lin.weight.data, 6)
        return q
    config = _config(recipe)
    if config is None:
        raise RecipeError(f"recipe {recipe.name!r} quantizes nothing; pick an int8, int4, fp16 or palettize6 recipe")
    from torchao.quantization import quantize_

    quantize_(q, config, filter_fn=lambda m, fqn: fqn == layer)
    return q


def _palettize(w: Tensor, bits: int, iters: int = 8) -> Tensor:
    """Per-tensor k-means palettization (what Core ML's ``palettize_weights`` does, approximately)."""
    flat = w.reshape(-1)
    k = 2**bits
    centers = torch.quantile(flat, torch.linspace(0, 1, k))
    for _ in range(iters):
        assign = (flat[:, None] - centers[None]).abs().argmin(1)
        for j in range(k):
            sel = flat[assign == j]
            if sel.numel():
                centers[j] = sel.mean()
    return centers[(flat[:, None] - centers[None]).abs().argmin(1)].reshape(w.shape)


def _snr(ref: Tensor, out: Tensor) -> float:
    noise = float((out.double() - ref.double()).pow(2).mean())
    return math.inf if noise == 0 else 10 * math.log10(float(ref.double().pow(2).mean()) / noise)


def layer_sensitivity(
    module: nn.Module,
    prefix: str,
    run: Callable[[nn.Module], Tensor],
    recipe: Recipe,
    log: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """Rows ``{layer, params, snr_db, kept_by_recipe}`` sorted from most to least sensitive, then a row
    ``(all quantized)`` with the recipe applied to every layer it quantizes."""
    with torch.no_grad():
        ref = run(module)
        rows = []
        layers = linear_layers(module)
        for i, (name, lin) in enumerate(layers):
            row = {
                "layer": f"{prefix}{name}",
                "params": lin.weight.numel(),
                "snr_db": None,
                "kept_by_recipe": _kept(f"{prefix}{name}", recipe.keep_float),
                "note": "",
            }
            if _fits(lin, recipe):
                row["snr_db"] = _snr(ref, run(quantize_one(module, name, recipe)))
                log(f"  [{i + 1}/{len(layers)}] {prefix}{name}: {row['snr_db']:.1f} dB")
            else:
                row["note"] = f"in_features {lin.in_features} not divisible by group size {recipe.group_size}"
            rows.append(row)
        rows.sort(key=lambda r: math.inf if r["snr_db"] is None else r["snr_db"])
        whole = module
        for name, lin in layers:
            if not _kept(f"{prefix}{name}", recipe.keep_float) and _fits(lin, recipe):
                whole = quantize_one(whole, name, recipe)
        rows.append(
            {
                "layer": "(all quantized)",
                "params": None,
                "snr_db": _snr(ref, run(whole)),
                "kept_by_recipe": False,
                "note": "every layer the recipe quantizes",
            }
        )
    return rows


def _fits(lin: nn.Linear, recipe: Recipe) -> bool:
    return not (recipe.group_size and recipe.weights in ("int8", "int4") and lin.in_features % recipe.group_size)


def model_sensitivity(model, recipe: Recipe, components=("lm", "dpd"), log: Callable[[str], None] = print) -> dict:
    """Sensitivity of the LM (logits over a sequence it generated) and the DPD (sampler-trajectory inputs)."""
    from ..export.parity import record_inputs

    c = model.config
    prefix = [5, 17, 301, 2, 999, 64, 128, 7, 450, 12, 1000, 33]
    inputs = record_inputs(model, prefix, c.steps, c.guidance_scale, chunks=1)
    out = {}
    if "lm" in components:
        ids = _generated_sequence(model, prefix, 48)
        log("LM: logits over a generated sequence")
        out["lm"] = layer_sensitivity(model.lm, "lm.", lambda m: m(ids), recipe, log)
    if "dpd" in components:
        calls = inputs.dpd[:2]
        log(f"DPD: {len(calls)} network calls from the sampler's trajectory")
        out["dpd"] = layer_sensitivity(model.dpd, "dpd.", lambda m: torch.cat([m(*a) for a in calls]), recipe, log)
    return out


def _generated_sequence(model, prefix: list[int], n: int) -> Tensor:
    lm = model.lm
    ids = lm.prefix_ids(torch.tensor([prefix]))
    with torch.no_grad():
        for _ in range(n):
            nxt = lm(ids)[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids


def format_sensitivity(result: dict, recipe: Recipe, top: int = 12) -> str:
    lines = [f"per-layer sensitivity, recipe {recipe.target}/{recipe.name} (SNR of the component, one layer quantized)"]
    for comp, rows in result.items():
        lines.append(f"  {comp}: {'layer':<44} {'params':>9} {'SNR dB':>8}")
        for r in [r for r in rows if r["params"] is not None][:top]:
            kept = "  (kept float by recipe)" if r["kept_by_recipe"] else ""
            snr = f"{r['snr_db']:8.1f}" if r["snr_db"] is not None else f"{'-':>8}  ({r['note']})"
            lines.append(f"       {r['layer']:<44} {r['params']:>9} {snr}{kept}")
        whole = rows[-1]
        lines.append(f"       {whole['layer']:<44} {'':>9} {whole['snr_db']:8.1f}")
    lines.append("  Keep the lowest layers in float with --keep-float NAME (repeatable) if the gate fails.")
    return "\n".join(lines)
