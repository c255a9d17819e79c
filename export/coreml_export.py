"""Apple targets: ``coreml`` (one ``.mlpackage`` per component) and ``executorch-coreml`` (Core ML inside ``.pte``).

``coreml``: ``torch.export`` -> ``run_decompositions({})`` -> ``ct.convert`` to an iOS 18 mlprogram. The LM
becomes ONE multifunction package (functions ``prefill`` and ``decode``) whose weights are stored once and
whose KV cache is Core ML state. Core ML converts a state update only when it is a slice assignment, so
the LM's ``index_copy_`` cache is swapped at export time (:func:`replace_kv_cache_with_slice_update`).
Weight compression runs after conversion (``coremltools.optimize.coreml``) on the parameter constants
the recipe selects, by name, so ``keep_float`` patterns are honoured exactly.

``executorch-coreml``: the ExecuTorch lowering of :mod:`.executorch_export` with the Core ML partitioner.
The LM keeps its cache as ExecuTorch mutable buffers shared by both methods (as on XNNPACK); int8/int4
weights come from torchao ``IntxWeightOnlyConfig``, which Core ML's converter maps to constexpr ops.

Core ML predicts only on macOS/iOS, so on other hosts the artifacts are validated structurally
(names, shapes, dtypes, state, weight bytes) and the validation says it did not run them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.lm import SemanticLM
from ..models.melody import MeLoDy
from ..quantization.recipes import Recipe, RecipeError
from ..quantization.torchao_quant import _kept, check_group_size
from . import adapters
from .adapters import MethodSpec
from .bundle import ExportError

COREML_TARGETS = ("coreml", "executorch-coreml")
SUPPORTED_WEIGHTS = {
    "coreml": ("fp32", "fp16", "int8", "int4", "palettize6"),
    # Core ML's torch frontend maps torchao's dequantize_affine (int8/int4) to constexpr ops, but has no
    # lookup-table op to receive a palettized weight, and the delegate offers no post-conversion hook.
    "executorch-coreml": ("fp32", "fp16", "int8", "int4"),
}
# Weight kinds that compress (Core ML compresses any const; these are the model's weight matrices).
WEIGHT_MODULES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
COMPRESSED_BITS = {"int8": 8.0, "int4": 4.0, "palettize6": 6.0}
WEIGHTS_DIR = ("Data", "com.apple.CoreML", "weights")
# Core ML state buffers are float16 whatever the compute precision.
STATE_DTYPE = "FLOAT16"


class CoreMLExportError(ExportError):
    """A Core ML conversion step failed; the message names the component and the step."""


# --------------------------------------------------------------------------------------------------
# The KV-cache swap (export time only; models/ stays untouched)


class SliceUpdateKVCache(nn.Module):
    """Stands in for ``models.lm.KVCache``: the same buffers, written by slice assignment.

    The positions of one call are contiguous (``start + arange(T)``), so writing the slice
    ``[start, start + T)`` stores exactly what ``index_copy_`` stores; the converter turns it into a
    Core ML ``slice_update`` of the state.
    """

    def __init__(self, k: Tensor, v: Tensor) -> None:
        super().__init__()
        self.register_buffer("k", k.clone(), persistent=False)
        self.register_buffer("v", v.clone(), persistent=False)

    def update(self, positions: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """positions [T] (contiguous); k, v [B, H, T, Dh] -> full caches [B, H, max_seq_len, Dh]."""
        t = k.shape[2]
        start = positions[0].item()
        # Bounds for torch.export's symbolic start (the eager KVCache fails the same way past the end).
        torch._check(start >= 0)
        torch._check(start + t <= self.k.shape[2])
        self.k[:, :, start : start + t] = k
        self.v[:, :, start : start + t] = v
        return self.k, self.v


def replace_kv_cache_with_slice_update(lm: SemanticLM) -> SemanticLM:
    """A deep copy of ``lm`` whose caches update by slice assignment (logits identical to ``lm``)."""
    lm = copy.deepcopy(lm)
    for layer in lm.layers:
        layer.cache = SliceUpdateKVCache(layer.cache.k, layer.cache.v)
    return lm


# --------------------------------------------------------------------------------------------------
# Plan, recipe checks and weight selection


def _coremltools():
    """Import coremltools without its import-time noise (missing macOS-only native proxies on Linux)."""
    with _quiet():
        try:
            import coremltools as ct
            import coremltools.optimize.coreml as cto
        except ImportError as exc:
            raise CoreMLExportError(
                "the coreml targets need coremltools (pip install 'coremltools>=9'); " + str(exc)
            ) from exc
    return ct, cto


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence progress bars, warnings and INFO logs of coremltools/ExecuTorch; errors still raise."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "executorch", "torch.export", "torchao")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _plan(model: MeLoDy, specs: dict, steps: int, sampler: bool, encoder: bool, lm: nn.Module) -> dict:
    """component -> (weights owner, its layer-name prefix, {method: (wrapper module, MethodSpec)}).

    The owner is the submodule whose weights the component's graph holds (the VAE decoder alone for
    ``vae_decoder``), so recipe checks and compression see exactly the exported layers.
    """
    vae = model.vae
    plan = {
        "lm": (lm, "lm.", {"prefill": (adapters.LMPrefill(lm), specs["lm"]["prefill"]),
                           "decode": (adapters.LMDecode(lm), specs["lm"]["decode"])}),
        "dpd": (model.dpd, "dpd.", {"forward": (adapters.DPDWindow(model.dpd), specs["dpd"]["forward"])}),
        "vae_decoder": (vae.decoder, "vae.decoder.",
                        {"forward": (adapters.VAEDecodeChunk(vae), specs["vae_decoder"]["forward"])}),
    }  # fmt: skip
    if sampler:
        sampler_method = (adapters.DPDSampler(model.dpd, steps), specs["dpd_sampler"]["forward"])
        plan["dpd_sampler"] = (model.dpd, "dpd.", {"forward": sampler_method})
    if encoder:
        encode = (adapters.VAEEncode(vae), specs["vae_encoder"]["forward"])
        plan["vae_encoder"] = (vae.encoder, "vae.encoder.", {"forward": encode})
    return plan


def compressible_weights(module: nn.Module, prefix: str, keep_float: tuple[str, ...]) -> dict[str, nn.Module]:
    """Layer name (``lm.layers.0.attn.wq``) -> module, for the weight layers a recipe compresses."""
    return {
        f"{prefix}{name}": m
        for name, m in module.named_modules()
        if isinstance(m, WEIGHT_MODULES) and not _kept(f"{prefix}{name}", keep_float)
    }


def check_block_size(
    module: nn.Module, block: int, keep_float: tuple[str, ...], prefix: str, convolutions: bool = True
) -> None:
    """Refuse an int4 block size that does not divide a compressed layer's input width.

    ``convolutions=False`` checks only rank-2 weights (linears, embeddings), for executorch-coreml
    where torchao leaves convolutions in float.
    """
    check_group_size(module, block, keep_float, prefix)  # linears, with the shared message
    bad = []
    for name, m in compressible_weights(module, prefix, keep_float).items():
        # Core ML blocks the input axis: dim 1 of [out, in, k] and [rows, dim]; dim 0 of transposed convs.
        width = m.weight.shape[0 if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d)) else 1]
        if not isinstance(m, nn.Linear) and (convolutions or m.weight.dim() == 2) and width % block:
            bad.append(f"{name} ({type(m).__name__}, input width {width})")
    if bad:
        raise RecipeError(
            f"int4 block size {block} does not divide the input width of {len(bad)} layer(s): "
            f"{', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}. Keep them in float (--keep-float NAME) "
            "or pick a group size that divides them (--group-size)."
        )


def _check_recipe(target: str, recipe: Recipe) -> None:
    if target not in COREML_TARGETS:
        raise RecipeError(f"not a Core ML target: {target} (Core ML targets: {', '.join(COREML_TARGETS)})")
    if recipe.target != target:
        raise RecipeError(f"recipe {recipe.name} is for {recipe.target}, not {target}")
    if recipe.weights not in SUPPORTED_WEIGHTS[target]:
        raise RecipeError(
            f"weights {recipe.weights!r} cannot be built for {target} (supported: "
            f"{', '.join(SUPPORTED_WEIGHTS[target])}); use the coreml target for palettization"
        )
    if recipe.weights == "int4" and not recipe.group_size:
        raise RecipeError(f"recipe {recipe.name}: int4 needs a group_size (the Core ML block size)")


def _compute_precision(ct, recipe: Recipe):
    """fp32 recipes compute in float32; every other recipe computes in float16 (what the ANE runs)."""
    fp16 = recipe.weights != "fp32" or recipe.activations == "fp16"
    return ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32


# --------------------------------------------------------------------------------------------------
# coreml: conversion, compression, multifunction merge


def convert_method(module: nn.Module, spec: MethodSpec, precision) -> object:
    """One method -> an in-memory iOS 18 mlprogram with the spec's input/output names (int64 -> int32)."""
    import numpy as np

    from .executorch_export import export_program

    ct, _ = _coremltools()
    program = export_program(module, spec).run_decompositions({})
    # Core ML has no int64 tensors: integer inputs are int32 (the converter would cast anyway).
    inputs = [
        ct.TensorType(name=t.name, shape=t.shape, dtype=np.int32 if t.dtype == "int64" else np.float32)
        for t in spec.inputs
    ]
    outputs = [ct.TensorType(name=t.name, dtype=np.float32) for t in spec.outputs]
    return ct.convert(
        program,
        inputs=inputs,
        outputs=outputs,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=precision,
        compute_units=ct.ComputeUnit.ALL,
        skip_model_load=True,  # loading needs the macOS runtime
    )


def _op_config(cto, recipe: Recipe):
    # weight_threshold 0: the selection by name already decides what compresses.
    if recipe.weights == "int8":
        return cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
        )
    if recipe.weights == "int4":
        return cto.OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype="int4",
            granularity="per_block",
            block_size=recipe.group_size,
            weight_threshold=0,
        )
    return cto.OpPalettizerConfig(mode="kmeans", nbits=6, granularity="per_tensor", weight_threshold=0)


def const_name(layer: str) -> str:
    """The Core ML const that holds a layer's weight: torch.export names parameters ``p_<fqn>``."""
    return "p_" + layer.replace(".", "_") + "_weight"


def compress_mlmodel(mlmodel, recipe: Recipe, layers: list[str]) -> tuple[object, list[str]]:
    """Compress the weight consts of ``layers`` (model-style names) in ``mlmodel``; others stay float.

    Returns (compressed model, the layers whose weight const was found and configured).
    """
    _, cto = _coremltools()
    wanted = {const_name(layer): layer for layer in layers}
    found = {}
    for function in mlmodel._mil_program.functions.values():
        for op in function.operations:
            # fp16 conversion renames weight consts ``<name>_to_fp16``.
            base = op.name.removesuffix("_to_fp16")
            if op.op_type == "const" and base in wanted:
                found[op.name] = wanted[base]
    if not found:
        return mlmodel, []
    op_config = _op_config(cto, recipe)
    config = cto.OptimizationConfig(op_name_configs={name: op_config for name in found})
    compress = cto.palettize_weights if recipe.weights == "palettize6" else cto.linear_quantize_weights
    return compress(mlmodel, config=config), sorted(set(found.values()))


def merge_functions(parts: dict[str, Path], path: Path, default: str) -> None:
    """Save single-function packages as one multifunction package (identical weights stored once)."""
    ct, _ = _coremltools()
    desc = ct.utils.MultiFunctionDescriptor()
    for function, part in parts.items():
        desc.add_function(str(part), src_function_name="main", target_function_name=function)
    desc.default_function_name = default
    ct.utils.save_multifunction(desc, str(path))


def _coreml_manifest_spec(spec: MethodSpec) -> dict:
    out = spec.to_dict()
    for t in out["inputs"]:
        t["dtype"] = "int32" if t["dtype"] == "int64" else t["dtype"]
    return out


def _export_coreml(plan: dict, recipe: Recipe, tmp: Path, scratch: Path, log) -> tuple[dict, dict, dict]:
    ct, _ = _coremltools()
    precision = _compute_precision(ct, recipe)
    components, quantized, requested = {}, {}, {}
    for name, (owner, prefix, methods) in plan.items():
        t0 = time.perf_counter()
        parts: dict[str, Path] = {}
        for method, (module, spec) in methods.items():
            layers = list(compressible_weights(owner, prefix, recipe.keep_float)) if recipe.quantized else []
            try:
                with _quiet():
                    mlmodel = convert_method(module, spec, precision)
                    if layers:
                        mlmodel, layers = compress_mlmodel(mlmodel, recipe, layers)
                    part = scratch / f"{name}.{method}.mlpackage"
                    mlmodel.save(str(part))
            except (RecipeError, CoreMLExportError):
                raise
            except Exception as exc:  # coremltools raises bare ValueError/RuntimeError for any failed op
                raise CoreMLExportError(f"Core ML conversion of {name}.{method} failed: {exc}") from exc
            parts[method] = part
            requested[name] = sorted(set(requested.get(name, [])) | set(layers))
        entry: dict = {"methods": {m: _coreml_manifest_spec(spec) for m, (_, spec) in methods.items()}}
        if len(parts) == 1:
            shutil.move(str(next(iter(parts.values()))), tmp / f"{name}.mlpackage")
            entry["file"] = f"{name}.mlpackage"
        else:
            try:
                with _quiet():
                    merge_functions(parts, tmp / f"{name}.mlpackage", default=list(parts)[-1])
                entry["file"] = f"{name}.mlpackage"
            except Exception as exc:  # an older runtime or a state mismatch: keep one package per method
                log(f"  {name}: multifunction merge failed ({exc}); writing one package per method")
                shutil.rmtree(tmp / f"{name}.mlpackage", ignore_errors=True)
                entry["files"] = {}
                for method, part in parts.items():
                    shutil.move(str(part), tmp / f"{name}.{method}.mlpackage")
                    entry["files"][method] = f"{name}.{method}.mlpackage"
                entry["file"] = next(iter(entry["files"].values()))
        if name == "lm":
            entry["state"] = (
                "kv cache: Core ML state lm_layers_<i>_cache_{k,v} [1, H, max_seq_len, Dh] float16, "
                "shared by the prefill and decode functions (one MLState per stream)"
            )
        components[name] = entry
        if recipe.quantized:
            quantized[name] = requested[name]
        size = sum(_tree_bytes(tmp / f) for f in entry.get("files", {"": entry["file"]}).values())
        log(f"  {name:<12} -> {entry['file']} ({size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
    return components, quantized, requested


def _tree_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# executorch-coreml


def coreml_partitioner(recipe: Recipe, stateful: bool) -> object:
    """The Core ML partitioner for a recipe (iOS 18, the recipe's compute precision)."""
    ct, _ = _coremltools()
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLBackend.generate_compile_specs(
        compute_unit=ct.ComputeUnit.ALL,
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=_compute_precision(ct, recipe),
    )
    # The cache stays an ExecuTorch mutable buffer: prefill and decode are separate delegates, and a
    # Core ML state inside one would be invisible to the other. The cache write (index_put from
    # index_copy_) runs as a portable op: Core ML's index_put translation fails on it
    # ("Input squeeze_0 has rank 1 != other inputs rank 0").
    return CoreMLPartitioner(
        compile_specs=specs,
        take_over_mutable_buffer=not stateful,
        skip_ops_for_coreml_delegation=["aten.index_put.default"] if stateful else None,
    )


def quantize_for_coreml_delegate(module: nn.Module, recipe: Recipe, prefix: str) -> tuple[nn.Module, list[str]]:
    """torchao weight-only int8 (per channel) / int4 (per group) on linears and embeddings not kept float."""
    if not recipe.quantized:
        return module, []
    from torchao.quantization import IntxWeightOnlyConfig, PerAxis, PerGroup, quantize_

    if recipe.weights == "int8":
        config = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    else:
        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(recipe.group_size))
    q = copy.deepcopy(module)
    # Core ML's dequantize_affine takes rank-2 weights only: convolutions stay float.
    wanted = {n for n, m in compressible_weights(q, prefix, recipe.keep_float).items() if m.weight.dim() == 2}
    with _quiet():
        quantize_(q, config, filter_fn=lambda m, fqn: f"{prefix}{fqn}" in wanted)
    return q, sorted(wanted)


def _export_executorch_coreml(
    model, lm: nn.Module, plan_args, recipe: Recipe, tmp: Path, log, names: set
) -> tuple[dict, dict]:
    """``lm``: the LM to export (``model.streaming_lm()``, built once by the caller)."""
    from .bundle import _with_components
    from .executorch_export import export_component

    specs, steps, sampler, encoder = plan_args
    lm, lm_q = quantize_for_coreml_delegate(lm, recipe, "lm.")
    dpd, dpd_q = quantize_for_coreml_delegate(model.dpd, recipe, "dpd.")
    vae, vae_q = quantize_for_coreml_delegate(model.vae, recipe, "vae.")
    plan = _plan(_with_components(model, dpd=dpd, vae=vae), specs, steps, sampler, encoder, lm)
    components, quantized = {}, {}
    for name, (_, prefix, methods) in plan.items():
        if name not in names:
            continue
        t0 = time.perf_counter()
        shared = ("cache",) if name == "lm" else ()
        path = tmp / f"{name}.pte"
        try:
            with _quiet():
                partitioner = coreml_partitioner(recipe, stateful=bool(shared))
                size = export_component(methods, "executorch-coreml", path, shared, [partitioner])
        except Exception as exc:  # ExecuTorch and coremltools raise bare errors: name the component
            raise CoreMLExportError(f"ExecuTorch Core ML lowering of {name} failed: {exc}") from exc
        log(f"  {name:<12} -> {path.name} ({size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
        components[name] = {
            "file": path.name,
            "methods": {m: spec.to_dict() for m, (_, spec) in methods.items()},
            **({"state": "kv cache: mutable buffers shared by prefill and decode"} if shared else {}),
        }
        if recipe.quantized:
            quantized[name] = [n for n in lm_q + dpd_q + vae_q if n.startswith(prefix)]
    return components, quantized


# --------------------------------------------------------------------------------------------------
# Public entry point


def export_coreml_components(
    model: MeLoDy,
    target: str,
    recipe: Recipe,
    tmp: Path,
    specs: dict,
    steps: int,
    sampler_artifact: bool,
    encoder_artifact: bool,
    log: Callable[[str], None] = print,
    *,
    only: Iterable[str] | None = None,
) -> tuple[dict, dict, dict]:
    """Write the Core ML artifacts of ``model`` for ``target`` into the bundle directory ``tmp``.

    Returns (components for the manifest, quantized layer names per component, validation). The
    validation never runs Core ML off Apple platforms: ``run`` is False there and each component
    carries the structural checks of :mod:`.coreml_validate`. ``only`` restricts the export to some
    components (tests, quick re-exports); a bundle needs all of them.
    """
    from .coreml_validate import not_run_reason, validate_mlpackage, validate_pte

    _check_recipe(target, recipe)
    tmp = Path(tmp)
    lm = model.streaming_lm()  # batch-2 cache when the checkpoint guides its LM
    plan_lm = replace_kv_cache_with_slice_update(lm) if target == "coreml" else lm
    plan = _plan(model, specs, steps, sampler_artifact, encoder_artifact, plan_lm)
    if only is not None:
        unknown = set(only) - set(plan)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}; components: {', '.join(plan)}")
        plan = {name: entry for name, entry in plan.items() if name in set(only)}
    if recipe.weights == "int4":
        for owner, prefix, _ in plan.values():
            check_block_size(owner, recipe.group_size, recipe.keep_float, prefix, convolutions=target == "coreml")
    validation: dict = {"run": False, "reason": not_run_reason(), "components": {}}
    if target == "coreml":
        with tempfile.TemporaryDirectory(prefix="melody-coreml-") as scratch:
            components, quantized, requested = _export_coreml(plan, recipe, tmp, Path(scratch), log)
        for name, entry in components.items():
            methods = plan[name][2]
            validation["components"][name] = validate_mlpackage(
                tmp, entry, {m: s for m, (_, s) in methods.items()}, recipe, requested.get(name, []),
                stateful=name == "lm", lm_config=lm.config,
            )  # fmt: skip
    else:
        components, quantized = _export_executorch_coreml(
            model, lm, (specs, steps, sampler_artifact, encoder_artifact), recipe, tmp, log, set(plan)
        )
        for name, entry in components.items():
            methods = plan[name][2]
            validation["components"][name] = validate_pte(
                tmp / entry["file"], {m: s for m, (_, s) in methods.items()}, recipe, quantized.get(name, [])
            )
    if platform.system() == "Darwin" and target == "coreml":
        from .coreml_validate import smoke_run

        validation.update(smoke_run(tmp, components))
    failures = [f"{n}: {f}" for n, v in validation["components"].items() for f in v["failures"]]
    validation["structural_ok"] = not failures
    for line in failures:
        log(f"  structural check failed: {line}")
    return components, quantized, validation
