"""Structural validation of Core ML artifacts on hosts that cannot run Core ML.

Core ML predicts only on macOS/iOS. Off those, an ``.mlpackage`` is checked from its spec (function
inputs, outputs and states against the bundle's :class:`MethodSpec`) and its weight file (bytes
stored against what the same weights take in float32, and against what the program's constants
say they should take). A ``.pte`` with Core ML delegates is loaded as a Program (its methods'
metadata is readable without the delegate) and the Core ML models inside it are unpacked and sized.
"""

from __future__ import annotations

import math
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..models.lm import LMConfig
from ..quantization.recipes import Recipe
from .adapters import MethodSpec
from .coreml_export import COMPRESSED_BITS, STATE_DTYPE, WEIGHTS_DIR, _coremltools, _quiet, const_name

# Bits per element of MIL data types (coremltools.proto.MIL_pb2.DataType names).
MIL_BITS = {"FLOAT16": 16, "BFLOAT16": 16, "FLOAT32": 32, "FLOAT64": 64, "INT8": 8, "INT16": 16, "INT32": 32,
            "INT64": 64, "INT4": 4, "UINT8": 8, "UINT16": 16, "UINT32": 32, "UINT64": 64, "UINT4": 4, "UINT6": 6,
            "UINT3": 3, "UINT2": 2, "UINT1": 1}  # fmt: skip
# What the compressed weights of each recipe must be stored as.
COMPRESSED_DTYPES = {"int8": {"INT8"}, "int4": {"INT4"}, "palettize6": {"UINT6"}}
SPEC_DTYPES = {"float32": "FLOAT32", "int64": "INT32"}  # Core ML feeds int64 tensors as int32
# Each blob in weight.bin has a 64-byte header and starts 64-byte aligned.
BLOB_OVERHEAD = 128
ET_DTYPES = {4: "int64", 6: "float32", 3: "int32", 5: "float16"}  # ExecuTorch ScalarType codes


def not_run_reason() -> str:
    host = f"{platform.system() or 'unknown'} {platform.machine()}".strip()
    return f"Core ML runs only on macOS/iOS; this host is {host}"


def _dims(tensor_type) -> list[int]:
    return [d.constant.size for d in tensor_type.dimensions]


def _feature(f) -> dict:
    kind = f.type.WhichOneof("Type")
    if kind == "stateType":
        array = f.type.stateType.arrayType
    elif kind == "multiArrayType":
        array = f.type.multiArrayType
    else:
        return {"name": f.name, "shape": None, "dtype": kind}
    from coremltools.proto import FeatureTypes_pb2

    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    return {"name": f.name, "shape": list(array.shape), "dtype": dtype}


def _blob(value) -> tuple[int, int, str] | None:
    """(offset, bytes, dtype) of a MIL value stored in weight.bin; None for inline values."""
    if value.WhichOneof("value") != "blobFileValue":
        return None
    from coremltools.proto import MIL_pb2

    tensor = value.type.tensorType
    dtype = MIL_pb2.DataType.Name(tensor.dataType)
    size = math.ceil(math.prod(_dims(tensor)) * MIL_BITS.get(dtype, 32) / 8)  # sub-byte types are packed
    return value.blobFileValue.offset, size, dtype


def mlpackage_summary(path: Path) -> dict:
    """Functions (inputs/outputs/states), weight bytes and the float32-equivalent bytes of a package.

    ``declared_bytes``: what the program's stored constants occupy by their declared types and shapes
    (headers excluded); ``blobs`` counts them for the header allowance; ``const_dtypes`` maps the
    dtype of plain constants to their bytes; ``compressed`` maps each constexpr (compressed weight)
    to its element count and stored dtype. Blobs shared by several functions count once.
    """
    ct, _ = _coremltools()
    with _quiet():
        spec = ct.utils.load_spec(str(path))
    desc = spec.description
    functions = {f.name: f for f in desc.functions} or {"main": desc}
    out: dict = {
        "functions": {
            name: {
                "inputs": [_feature(x) for x in f.input],
                "outputs": [_feature(x) for x in f.output],
                "states": [_feature(x) for x in f.state],
            }
            for name, f in functions.items()
        },
        "spec_version": spec.specificationVersion,
    }
    seen: set[int] = set()
    fp32 = declared = 0
    const_dtypes: dict[str, int] = {}
    compressed: dict[str, dict] = {}
    for fn in spec.mlProgram.functions.values():
        for op in fn.block_specializations[fn.opset].operations:
            if op.type == "const":
                blob = _blob(op.attributes["val"])
                if blob is None or blob[0] in seen:
                    continue
                seen.add(blob[0])
                declared += blob[1]
                const_dtypes[blob[2]] = const_dtypes.get(blob[2], 0) + blob[1]
                fp32 += 4 * math.prod(_dims(op.attributes["val"].type.tensorType))
            elif op.type.startswith("constexpr_"):
                blobs = {key: b for key, inp in op.inputs.items() for a in inp.arguments if a.HasField("value")
                         for b in [_blob(a.value)] if b is not None}  # fmt: skip
                new = [b for b in blobs.values() if b[0] not in seen]
                if not new:
                    continue
                seen.update(b[0] for b in new)
                declared += sum(b[1] for b in new)
                numel = math.prod(_dims(op.outputs[0].type.tensorType))
                fp32 += 4 * numel
                # The stored weights: palette indices, or the quantized data (iOS 18 / iOS 16 op names).
                data = next((blobs[k] for k in ("indices", "data", "quantized_data") if k in blobs), None)
                compressed[op.outputs[0].name] = {"numel": numel, "dtype": data[2] if data else None, "op": op.type}
    weights = Path(path, *WEIGHTS_DIR)
    out["weight_bytes"] = sum(p.stat().st_size for p in weights.rglob("*") if p.is_file()) if weights.is_dir() else 0
    out["fp32_weight_bytes"] = fp32
    out["declared_bytes"] = declared
    out["blobs"] = len(seen)
    out["const_dtypes"] = const_dtypes
    out["compressed"] = compressed
    return out


def _compare(kind: str, method: str, got: list[dict], want, failures: list[str]) -> bool:
    expected = [{"name": t.name, "shape": list(t.shape), "dtype": SPEC_DTYPES[t.dtype]} for t in want]
    if got != expected:
        failures.append(f"{method} {kind}: expected {expected}, found {got}")
        return False
    return True


def _expected_states(cfg: LMConfig) -> list[dict]:
    shape = [cfg.cache_batch_size, cfg.n_heads, cfg.max_seq_len, cfg.head_dim]
    return [
        {"name": f"lm_layers_{i}_cache_{kv}", "shape": shape, "dtype": STATE_DTYPE}
        for i in range(cfg.n_layers)
        for kv in ("k", "v")
    ]


def _storage_failures(recipe: Recipe, const_dtypes: dict[str, int], compressed: dict[str, dict]) -> list[str]:
    """What the recipe says about how weights are stored, checked against a program's constants."""
    failures = []
    if recipe.weights == "fp32" and (const_dtypes.get("FLOAT16") or compressed):
        failures.append("fp32 recipe, but some weights are stored below 32 bits")
    if recipe.weights != "fp32" and const_dtypes.get("FLOAT32"):
        failures.append(f"{const_dtypes['FLOAT32']} bytes of float32 constants in a float16-compute recipe")
    wrong = {c["dtype"] for c in compressed.values()} - COMPRESSED_DTYPES.get(recipe.weights, set())
    if wrong:
        failures.append(f"compressed weights stored as {sorted(wrong)}, not as the {recipe.weights} recipe says")
    return failures


def validate_mlpackage(
    bundle: Path,
    entry: dict,
    methods: dict[str, MethodSpec],
    recipe: Recipe,
    requested: list[str],
    stateful: bool = False,
    lm_config: LMConfig | None = None,
) -> dict:
    """Check one component's package(s) against its methods, state and recipe; never raises for a mismatch.

    Returns {"files", "functions", "inputs_ok", "outputs_ok", "state_ok", "weight_bytes" (weight.bin),
    "fp32_weight_bytes" (the same constants at 4 bytes each), "const_dtypes", "ratio" (weight / fp32),
    "ideal_ratio" (recipe's nominal bits, no scales or headers), "compressed_layers", "failures"}.
    """
    failures: list[str] = []
    files = entry.get("files") or {m: entry["file"] for m in methods}
    summaries = {f: mlpackage_summary(bundle / f) for f in sorted(set(files.values()))}
    inputs_ok = outputs_ok = state_ok = True
    functions = []
    for method, spec in methods.items():
        fns = summaries[files[method]]["functions"]
        functions += [f for f in fns if f not in functions]
        fn = fns.get(method) if len(fns) > 1 else next(iter(fns.values()))
        if fn is None:
            failures.append(f"{files[method]} has no function {method!r} (functions: {', '.join(fns)})")
            inputs_ok = outputs_ok = False
            continue
        inputs_ok &= _compare("inputs", method, fn["inputs"], spec.inputs, failures)
        outputs_ok &= _compare("outputs", method, fn["outputs"], spec.outputs, failures)
        if stateful and lm_config is not None and fn["states"] != _expected_states(lm_config):
            state_ok = False
            failures.append(f"{method} states: expected {_expected_states(lm_config)}, found {fn['states']}")
        elif not stateful and fn["states"]:
            state_ok = False
            failures.append(f"{method}: unexpected states {fn['states']}")
    total = {k: sum(s[k] for s in summaries.values()) for k in ("weight_bytes", "fp32_weight_bytes", "declared_bytes")}
    blobs = sum(s["blobs"] for s in summaries.values())
    compressed = {n: c for s in summaries.values() for n, c in s["compressed"].items()}
    const_dtypes: dict[str, int] = {}
    for s in summaries.values():
        for dtype, size in s["const_dtypes"].items():
            const_dtypes[dtype] = const_dtypes.get(dtype, 0) + size
    compressed_layers = sorted(layer for layer in requested if any(n.startswith(const_name(layer)) for n in compressed))
    missing = sorted(set(requested) - set(compressed_layers))
    if missing:
        failures.append(f"{len(missing)} layer(s) the recipe compresses are still float: {', '.join(missing[:6])}")
    # weight.bin must hold what the program declares: data plus at most a header and alignment per blob.
    declared, weight = total["declared_bytes"], total["weight_bytes"]
    if not declared <= weight <= declared + BLOB_OVERHEAD * blobs + 64:
        failures.append(
            f"weight file holds {weight} bytes; the program declares {declared} "
            f"(+ up to {BLOB_OVERHEAD * blobs + 64} of headers)"
        )
    failures += _storage_failures(recipe, const_dtypes, compressed)
    fp32 = total["fp32_weight_bytes"]
    # What the weights would take ideally: float consts at their width, compressed ones at the recipe's bits.
    bits = COMPRESSED_BITS.get(recipe.weights, 32.0)
    ideal = sum(const_dtypes.values()) + sum(c["numel"] for c in compressed.values()) * bits / 8
    return {
        "files": sorted(summaries),
        "functions": functions,
        "inputs_ok": inputs_ok,
        "outputs_ok": outputs_ok,
        "state_ok": state_ok,
        "weight_bytes": weight,
        "fp32_weight_bytes": fp32 or None,
        "const_dtypes": const_dtypes,
        "ratio": weight / fp32 if fp32 else None,
        "ideal_ratio": ideal / fp32 if fp32 else None,
        "compressed_layers": compressed_layers,
        "failures": failures,
    }


def _pte_structure(path: Path) -> tuple[dict, list[bytes]]:
    """method -> (delegate backend ids, portable operator names), and the delegate payloads."""
    from executorch.exir._serialize._program import deserialize_pte_binary  # private, hence guarded by caller

    pte = deserialize_pte_binary(path.read_bytes())
    methods = {}
    for plan in pte.program.execution_plan:
        methods[plan.name] = ([d.id for d in plan.delegates], sorted({op.name for op in plan.operators}))
    store = pte.named_data
    payloads = [bytes(store.buffers[e.buffer_index]) for e in (store.pte_data or {}).values()] if store else []
    payloads += [bytes(d.data) for d in pte.program.backend_delegate_data if len(d.data) > 1024]
    return methods, payloads


def validate_pte(
    path: Path, methods: dict[str, MethodSpec], recipe: Recipe | None = None, requested: Sequence[str] = ()
) -> dict:
    """Load the ``.pte`` as a Program, check method metadata and delegates, size the Core ML models inside.

    With a ``recipe``, the Core ML programs inside must store their weights as it says (as
    :func:`validate_mlpackage` checks a package): fp32 keeps every constant at 32 bits, fp16 none, and a
    compressing recipe that names layers (``requested``) must have compressed at least that many
    weights, in its data type. A quantized recipe whose delegate still holds float weights fails here.
    """
    from executorch.runtime import Runtime

    failures: list[str] = []
    runtime = Runtime.get()
    result: dict = {"file": path.name, "bytes": path.stat().st_size, "inputs_ok": False, "outputs_ok": False}
    try:
        program = runtime.load_program(str(path))
    except Exception as exc:  # the runtime raises bare RuntimeErrors for any bad file
        return {**result, "loads": False, "failures": [f"ExecuTorch cannot load {path.name}: {exc}"]}
    result["loads"] = True
    if set(program.method_names) != set(methods):
        failures.append(f"methods {sorted(program.method_names)} != {sorted(methods)}")
    inputs_ok = outputs_ok = True
    for name, spec in methods.items():
        if name not in program.method_names:
            inputs_ok = outputs_ok = False
            continue
        meta = program.metadata(name)
        got_in = [(list(meta.input_tensor_meta(i).sizes()), ET_DTYPES.get(int(meta.input_tensor_meta(i).dtype())))
                  for i in range(meta.num_inputs())]  # fmt: skip
        got_out = [(list(meta.output_tensor_meta(i).sizes()), ET_DTYPES.get(int(meta.output_tensor_meta(i).dtype())))
                   for i in range(meta.num_outputs())]  # fmt: skip
        if got_in != [(list(t.shape), t.dtype) for t in spec.inputs]:
            inputs_ok = False
            failures.append(f"{name} inputs {got_in} differ from {[t.to_dict() for t in spec.inputs]}")
        if got_out != [(list(t.shape), t.dtype) for t in spec.outputs]:
            outputs_ok = False
            failures.append(f"{name} outputs {got_out} differ from {[t.to_dict() for t in spec.outputs]}")
    result.update(inputs_ok=inputs_ok, outputs_ok=outputs_ok)
    result["coreml_backend_registered"] = runtime.backend_registry.is_available("CoreMLBackend")
    try:
        structure, payloads = _pte_structure(path)
    except Exception as exc:  # a private ExecuTorch API: report it rather than fail the export
        result.update(delegates=None, failures=[*failures, f"cannot inspect delegates: {exc}"])
        return result
    result["delegates"] = {m: {"coreml": ids.count("CoreMLBackend"), "portable_ops": ops}
                           for m, (ids, ops) in structure.items()}  # fmt: skip
    for m, (ids, _) in structure.items():
        if "CoreMLBackend" not in ids:
            failures.append(f"{m}: no Core ML delegate (everything would run on portable CPU kernels)")
    weight = fp32 = 0
    const_dtypes: dict[str, int] = {}
    compressed: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="melody-pte-") as scratch:
        from executorch.backends.apple.coreml import executorchcoreml

        for i, blob in enumerate(payloads):
            folder = Path(scratch, str(i))
            folder.mkdir()
            if not executorchcoreml.unflatten_directory_contents(blob, str(folder)):
                continue
            for package in folder.rglob("*.mlpackage"):
                summary = mlpackage_summary(package)
                weight += summary["weight_bytes"]
                fp32 += summary["fp32_weight_bytes"]
                for dtype, size in summary["const_dtypes"].items():
                    const_dtypes[dtype] = const_dtypes.get(dtype, 0) + size
                # Each delegate (one per method) holds its own copy: key by payload as well as name.
                compressed.update({f"{i}/{n}": c for n, c in summary["compressed"].items()})
    if recipe is not None:
        failures += _storage_failures(recipe, const_dtypes, compressed)
        if recipe.quantized and len(compressed) < len(requested):
            failures.append(
                f"the {recipe.weights} recipe compresses {len(requested)} layer(s), but the Core ML programs "
                f"inside hold {len(compressed)} compressed weight(s): the rest are stored as float"
            )
    result.update(
        weight_bytes=weight,
        fp32_weight_bytes=fp32 or None,
        ratio=weight / fp32 if fp32 else None,
        const_dtypes=const_dtypes,
        compressed_weights=len(compressed),
        failures=failures,
    )
    return result


def smoke_run(bundle: Path, components: dict) -> dict:
    """macOS only: zero inputs through every function (the LM with one state); shapes and finiteness."""
    import numpy as np

    ct, _ = _coremltools()
    report = {}
    for name, entry in components.items():
        files = entry.get("files") or {m: entry["file"] for m in entry["methods"]}
        state, problems = None, []
        for method, spec in entry["methods"].items():
            try:
                multi = len(set(files.values())) == 1 and len(entry["methods"]) > 1
                kwargs = {"function_name": method} if multi else {}
                model = ct.models.MLModel(str(bundle / files[method]), **kwargs)
                if name == "lm" and state is None:
                    state = model.make_state()
                feeds = {t["name"]: np.zeros(t["shape"], dtype=t["dtype"]) for t in spec["inputs"]}
                out = model.predict(feeds, state=state) if name == "lm" else model.predict(feeds)
                for t in spec["outputs"]:
                    value = np.asarray(out[t["name"]])
                    if list(value.shape) != t["shape"] or not np.isfinite(value).all():
                        problems.append(
                            f"{method}.{t['name']}: shape {list(value.shape)}, finite {np.isfinite(value).all()}"
                        )
            except Exception as exc:  # report; the parity gate decides
                problems.append(f"{method}: {exc}")
        report[name] = {"ok": not problems, "problems": problems}
    ok = all(r["ok"] for r in report.values())
    return {"run": True, "reason": "smoke run on macOS: zero inputs through every function", "smoke": report,
            "smoke_ok": ok}  # fmt: skip
