"""ONNX (onnxruntime): ``torch.onnx.export(dynamo=True)`` per component, then ORT quantization.

ONNX has no mutable buffers, so the LM's KV cache becomes an explicit tensor: ``prefill`` and
``decode`` each take ``cache`` [L, 2, 1, H, S, Dh] and return ``present`` of the same shape. The
swap that makes this possible (:func:`replace_kv_cache_with_explicit`) lives here, not in ``models/``.
Quantization: ``MatMulNBitsQuantizer`` from ``onnxruntime.quantization`` (8- or 4-bit weight blocks,
int8 dynamic activations at accuracy level 4).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.lm import SemanticLM
from ..models.melody import MeLoDy
from ..quantization.recipes import Recipe, RecipeError
from . import adapters
from .adapters import MethodSpec, TensorSpec

OPSET = 18


class ExplicitKVCache(nn.Module):
    """Stands in for ``KVCache``: reads the cache from a tensor bound per call, writes out of place.

    The written slots are selected by a one-hot position matrix (multiplications by exactly 0 and 1,
    so the update is bit-exact) because scatter-style updates of a graph input export poorly.
    """

    def __init__(self, max_seq_len: int) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def bind(self, k: Tensor, v: Tensor) -> None:
        self.k, self.v = k, v

    def update(self, positions: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """positions [T]; k, v [B, H, T, Dh] -> full caches [B, H, S, Dh] (also kept as .k/.v)."""
        slots = torch.arange(self.max_seq_len, device=positions.device)
        onehot = (positions[:, None] == slots[None, :]).to(k.dtype)  # [T, S]
        keep = 1.0 - onehot.sum(0)[:, None]  # [S, 1]
        self.k = self.k * keep + torch.einsum("ts,bhtd->bhsd", onehot, k)
        self.v = self.v * keep + torch.einsum("ts,bhtd->bhsd", onehot, v)
        return self.k, self.v


def replace_kv_cache_with_explicit(lm: SemanticLM) -> SemanticLM:
    """A deep copy of ``lm`` whose layers read and write an explicit cache instead of buffers."""
    lm = copy.deepcopy(lm)
    for layer in lm.layers:
        layer.cache = ExplicitKVCache(lm.config.max_seq_len)
    return lm


class LMWithExplicitCache(nn.Module):
    """``prefill``/``decode`` with the cache in and out: (ids, start_pos, cache) -> (logits, present)."""

    def __init__(self, lm: SemanticLM, decode: bool) -> None:
        super().__init__()
        self.lm = lm if isinstance(lm.layers[0].cache, ExplicitKVCache) else replace_kv_cache_with_explicit(lm)
        self.decode = decode

    def forward(self, ids: Tensor, start_pos: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        for i, layer in enumerate(self.lm.layers):
            layer.cache.bind(cache[i, 0], cache[i, 1])
        logits = self.lm.decode(ids, start_pos) if self.decode else self.lm.prefill(ids, start_pos)
        present = torch.stack([torch.stack([layer.cache.k, layer.cache.v]) for layer in self.lm.layers])
        return logits, present


def cache_shape(lm: SemanticLM) -> tuple[int, ...]:
    c = lm.config
    return (c.n_layers, 2, c.cache_batch_size, c.n_heads, c.max_seq_len, c.head_dim)


def onnx_lm_specs(lm: SemanticLM, specs: dict[str, MethodSpec]) -> dict[str, MethodSpec]:
    """The LM methods of ``method_specs`` with the explicit cache added as input and output."""
    cache = TensorSpec("cache", cache_shape(lm), "float32")
    present = TensorSpec("present", cache_shape(lm), "float32")
    return {name: MethodSpec(name, (*spec.inputs, cache), (*spec.outputs, present)) for name, spec in specs.items()}


def export_onnx(module: nn.Module, spec: MethodSpec, path: Path, optimize: bool = True) -> None:
    """Static-shape dynamo export of one method to ``path`` (weights inside the file when < 2 GB).

    ``optimize``: run onnxscript's whole optimizer on the graph; otherwise only its constant folding.
    The unrolled sampler takes the second: on the demo DPD (T = 5, 14,649 nodes) the export takes
    about 23 s that way and had not finished after 6 minutes with the whole optimizer; onnxruntime
    applies its own graph optimisations when it loads the file. The folding is needed: it turns each
    ``Transpose(weight)`` into a constant, so every linear layer is a MatMul on an initializer, the form
    :func:`onnx_linear_nodes` and the quantizer look for.
    """
    module = module.eval().requires_grad_(False)
    # The exporter logs a warning per missing optional op library (torchvision) on every call, and
    # onnxscript's optimizer (and onnx_ir's passes) an INFO line per rewrite once onnxruntime.quantization
    # has configured logging.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    quiet = io.StringIO()
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            spec.examples(),
            dynamo=True,
            opset_version=OPSET,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            verbose=False,
            optimize=optimize,  # onnxscript's optimizer runs here, once
        )
        if not optimize:
            import onnx_ir.passes.common
            import onnxscript.optimizer

            onnxscript.optimizer.fold_constants(program.model)
            # Steps fold equal constants of their own (zero states, masks): store each once.
            onnx_ir.passes.common.DeduplicateInitializersPass()(program.model)
        big = sum(p.numel() * 4 for p in module.parameters()) > 1.8e9
        program.save(str(path), external_data=big)


def onnx_linear_nodes(path: Path) -> dict[str, str]:
    """Node name -> PyTorch module path (``lm.layers.0.ffn.w1``) for every MatMul/Gemm that is an ``nn.Linear``.

    Attention's activation-by-activation MatMuls are left out: quantizing both of their inputs to
    8 bits costs far more accuracy than it saves (it took the tiny LM from ~40 dB to 15 dB).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in weights:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        classes = _parse_list(meta.get("pkg.torch.onnx.class_hierarchy", ""))
        scopes = _parse_list(meta.get("pkg.torch.onnx.name_scopes", ""))
        # e.g. scopes ['', 'dpd', 'dpd.in_proj', 'linear'] with classes [..., 'torch.nn.modules.linear.Linear',
        # 'aten.linear.default']: the scope before the op's own name is the Linear module.
        if len(classes) >= 2 and classes[-2].endswith("Linear") and len(scopes) >= 2:
            out[node.name] = scopes[-2]
    return out


def _parse_list(text: str) -> list[str]:
    return [s.strip(" '\"") for s in text.strip("[]").split(",")]


def _strip_wrapper(module_path: str, component: str) -> str:
    # Wrappers hold the network as ``.lm`` / ``.dpd`` / ``.vae``: map to the model's naming.
    head, _, rest = module_path.partition(".")
    if head in ("lm", "dpd", "vae"):
        return f"{component}.{rest}" if rest else component
    return f"{component}.{module_path}" if module_path else component


def quantize_onnx(path: Path, recipe: Recipe, component: str) -> list[str]:
    """Quantize ``path`` in place with ``recipe``; returns the model-style names of quantized layers."""
    from ..quantization.torchao_quant import _kept

    nodes = onnx_linear_nodes(path)
    named = {n: _strip_wrapper(m, component) for n, m in nodes.items()}
    excluded = [n for n, m in named.items() if _kept(m, recipe.keep_float)]
    selected = [n for n in named if n not in excluded]
    chosen = sorted({named[n] for n in selected})
    tmp = path.with_suffix(".q.onnx")
    if recipe.weights not in ("int8", "int4"):
        raise RecipeError(f"weights {recipe.weights!r} are not an ONNX recipe mode (fp32, int8, int4)")
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # Block-wise weights through MatMulNBits for int8 as well as int4: quantize_dynamic's per-tensor
    # uint8 activations measured 16 dB on the tiny DPD (each of several layers alone cost 23-30 dB),
    # under the 20 dB gate. accuracy_level 4 runs the products in int8 with activations quantized per
    # block at run time (dynamic int8 activations).
    # It logs an INFO line per node it visits (thousands for the unrolled sampler).
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    model = onnx.load(str(path))
    others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in selected]
    quant = MatMulNBitsQuantizer(
        model,
        bits=8 if recipe.weights == "int8" else 4,
        block_size=recipe.group_size,
        is_symmetric=True,
        accuracy_level=4 if recipe.activations == "int8-dynamic" else None,
        nodes_to_exclude=others,
    )
    quant.process()
    quant.model.save_model_to_file(str(tmp), use_external_data_format=False)
    tmp.replace(path)
    return chosen


def onnx_plan(model: MeLoDy, specs: dict, steps: int, sampler: bool, encoder: bool) -> dict:
    """component -> {method: (module, spec)}; the LM gets one file per method (ONNX has one graph per file)."""
    lm = replace_kv_cache_with_explicit(model.streaming_lm())
    lm_specs = onnx_lm_specs(lm, specs["lm"])
    plan = {
        "lm": {
            "prefill": (LMWithExplicitCache(lm, decode=False), lm_specs["prefill"]),
            "decode": (LMWithExplicitCache(lm, decode=True), lm_specs["decode"]),
        },
        "dpd": {"forward": (adapters.DPDWindow(model.dpd), specs["dpd"]["forward"])},
        "vae_decoder": {"forward": (adapters.VAEDecodeChunk(model.vae), specs["vae_decoder"]["forward"])},
    }
    if sampler:
        plan["dpd_sampler"] = {"forward": (adapters.DPDSampler(model.dpd, steps), specs["dpd_sampler"]["forward"])}
    if encoder:
        plan["vae_encoder"] = {"forward": (adapters.VAEEncode(model.vae), specs["vae_encoder"]["forward"])}
    return plan


QUANTIZED_COMPONENTS = ("lm", "dpd", "dpd_sampler")


def check_onnx_blocks(model: MeLoDy, recipe: Recipe) -> None:
    """Refuse, naming them, quantized layers whose input width is not a multiple of the recipe's block.

    MatMulNBits would pad such a layer's last block, but the torchao emulation behind the 'quantized
    eager' parity gate cannot, and failed deep inside torchao (int8 and int4 both use blocks here).
    """
    if recipe.quantized and recipe.group_size:
        from ..quantization.torchao_quant import check_group_size

        check_group_size(model.lm, recipe.group_size, recipe.keep_float, "lm.")
        check_group_size(model.dpd, recipe.group_size, recipe.keep_float, "dpd.")


def export_onnx_components(
    model: MeLoDy,
    recipe: Recipe,
    tmp: Path,
    specs: dict,
    steps: int,
    sampler_artifact: bool,
    encoder_artifact: bool,
    log: Callable[[str], None],
) -> tuple[dict, dict, MeLoDy | None]:
    """Write one ``.onnx`` per component method into ``tmp``; quantize the LM and DPD per ``recipe``.

    Returns (components for the manifest, quantized layer names per component, the eager model with
    the same quantization emulated by torchao, or None for float recipes).
    """
    check_onnx_blocks(model, recipe)
    components: dict = {}
    quantized: dict[str, list[str]] = {}
    for name, methods in onnx_plan(model, specs, steps, sampler_artifact, encoder_artifact).items():
        entry: dict = {"files": {}, "methods": {}}
        for method, (module, spec) in methods.items():
            t0 = time.perf_counter()
            fname = f"{name}.onnx" if len(methods) == 1 else f"{name}.{method}.onnx"
            path = tmp / fname
            export_onnx(module, spec, path, optimize=name != "dpd_sampler")
            if recipe.quantized and name in QUANTIZED_COMPONENTS:
                layers = quantize_onnx(path, recipe, "dpd" if name == "dpd_sampler" else name)
                quantized.setdefault(name, sorted(set(quantized.get(name, [])) | set(layers)))
            entry["files"][method] = fname
            entry["methods"][method] = spec.to_dict()
            size = path.stat().st_size
            log(f"  {name + '.' + method:<20} -> {fname} ({size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
        entry["file"] = next(iter(entry["files"].values()))
        if len(entry["files"]) > 1:
            data = f"{name}.weights"
            saved = share_weights([tmp / f for f in entry["files"].values()], tmp / data)
            entry["shared_weights"] = data
            n = len(entry["files"])
            log(f"  {name:<20} -> {data}: weights stored once for {n} graphs ({saved / 1e6:.2f} MB saved)")
        if name == "lm":
            entry["state"] = "kv cache: explicit input 'cache' and output 'present' [L, 2, B, H, S, Dh]"
        components[name] = entry
    if recipe.quantized and "dpd_sampler" in quantized and quantized["dpd_sampler"] != quantized.get("dpd"):
        from .bundle import ExportError

        # The sampler's T steps are the DPD's layers; quantized apart, they must come out the same.
        missing = sorted(set(quantized.get("dpd", [])) - set(quantized["dpd_sampler"]))
        raise ExportError(
            f"the unrolled sampler's graph quantized {len(quantized['dpd_sampler'])} layers, the DPD's "
            f"{len(quantized.get('dpd', []))} (not in the sampler: {', '.join(missing[:5]) or 'none'}); "
            "re-export with --no-sampler"
        )
    return components, quantized, emulate_onnx_quantization(model, recipe)


def share_weights(paths: list[Path], data_path: Path, min_bytes: int = 1024) -> int:
    """Store initializers that several graphs hold byte for byte once, in ``data_path`` (ONNX external data).

    ONNX has one graph per file, so the LM's ``prefill`` and ``decode`` graphs would each carry every
    weight. Returns the bytes saved. Tensors that differ between graphs stay inside their graph.
    """
    import hashlib

    import onnx
    from onnx.external_data_helper import set_external_data

    # Graphs over 2 GB were saved with their own external data file (``X.onnx.data``); once their weights
    # move into ``data_path`` those files are orphans and must not stay in the bundle (they doubled `paper`).
    before = {loc for p in paths for loc in _external_locations(onnx.load(str(p), load_external_data=False))}
    models = [onnx.load(str(p)) for p in paths]
    seen: dict[str, list] = {}
    for model in models:
        for t in model.graph.initializer:
            if len(t.raw_data) >= min_bytes:
                seen.setdefault(hashlib.sha256(t.raw_data).hexdigest(), []).append(t)
    offsets: dict[str, tuple[int, int]] = {}
    saved = 0
    with open(data_path, "wb") as f:
        for digest, tensors in seen.items():
            if len(tensors) < 2:
                continue
            raw = tensors[0].raw_data
            # 4 KB alignment lets runtimes memory-map each tensor.
            f.write(b"\0" * (-f.tell() % 4096))
            offsets[digest] = (f.tell(), len(raw))
            f.write(raw)
            saved += len(raw) * (len(tensors) - 1)
            for t in tensors:
                offset, length = offsets[digest]
                set_external_data(t, location=data_path.name, offset=offset, length=length)
                t.ClearField("raw_data")
    for model, path in zip(models, paths):
        onnx.save_model(model, str(path))
    # Every tensor left outside ``data_path`` was re-saved inside its graph, so the old files are unused.
    for orphan in before - {data_path.name}:
        (data_path.parent / orphan).unlink(missing_ok=True)
    return saved


def _external_locations(model) -> set[str]:
    """The external data files an ONNX model's initializers point to."""
    from onnx.external_data_helper import uses_external_data

    out = set()
    for t in model.graph.initializer:
        if uses_external_data(t):
            out |= {e.value for e in t.external_data if e.key == "location"}
    return out


def emulate_onnx_quantization(model: MeLoDy, recipe: Recipe) -> MeLoDy | None:
    """The eager model with the recipe's weight quantization applied by torchao, for 'quantized eager' parity.

    Weights in the recipe's blocks; activations quantized per token by torchao where MatMulNBits
    quantizes them per block, so the emulation is close, not identical.
    """
    if not recipe.quantized:
        return None
    from torchao.quantization import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
        PerGroup,
        quantize_,
    )

    from ..quantization.torchao_quant import _kept, linear_layers

    dtype = torch.int8 if recipe.weights == "int8" else torch.int4
    if recipe.activations == "int8-dynamic":
        config = Int8DynamicActivationIntxWeightConfig(
            weight_dtype=dtype, weight_granularity=PerGroup(recipe.group_size)
        )
    else:
        config = IntxWeightOnlyConfig(weight_dtype=dtype, granularity=PerGroup(recipe.group_size))
    parts = {}
    for name in ("lm", "dpd"):
        module = copy.deepcopy(getattr(model, name))
        wanted = {n for n, _ in linear_layers(module, f"{name}.") if not _kept(n, recipe.keep_float)}
        quantize_(module, config, filter_fn=lambda m, fqn, p=f"{name}.", w=wanted: f"{p}{fqn}" in w)
        parts[name] = module
    from .bundle import _with_components

    return _with_components(model, **parts)
