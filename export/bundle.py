"""``melody-edge export``: build a bundle in a temporary directory, verify it, then rename it into place.

A failed or interrupted export leaves nothing at the output path.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..models.checkpoint import save_component
from ..models.diffusion import angle_schedule
from ..models.melody import MeLoDy
from ..quantization.recipes import Recipe, RecipeError
from ..runtime.manifest import MANIFEST, PARITY, SCHEMA_VERSION, sha256_tree, tree_size, validate_manifest
from . import adapters
from .parity import ParityError, format_parity, run_parity

# Worded like the demo model's training captions (docs/data.md), so its conditioning knows them.
DEFAULT_PRESETS = (
    ("folk fiddle", "a fiddle tune in D major, 2/4 at 132 bpm, played by violin with drums"),
    ("organ chorale", "a baroque chorale in F major, 4/4 at 72 bpm, played by church organ"),
    ("string quartet", "a classical string quartet in A minor, 3/4 at 110 bpm, played by violin, viola and cello"),
    ("renaissance choir", "a renaissance motet in G major, 4/2 at 70 bpm, played by choir"),
)
TOOLS = ("torch", "executorch", "coremltools", "torchao", "onnx", "onnxruntime", "melody-edge")
CONDITIONER_DIR = "conditioner"
HOST_TARGETS = ("executorch-xnnpack", "onnx", "executorch-coreml", "coreml")
RUNNABLE_HERE = ("executorch-xnnpack", "onnx")
APPLE_TARGETS = ("executorch-coreml", "coreml")
# The packages each target's export imports (versions as pinned in pyproject.toml).
TARGET_MODULES = {
    "executorch-xnnpack": (("executorch", "executorch==1.5.1"),),
    "executorch-coreml": (("executorch", "executorch==1.5.1"), ("coremltools", "coremltools==9.0")),
    "coreml": (("coremltools", "coremltools==9.0"),),
    "onnx": (
        ("onnx", "'onnx>=1.23,<1.24'"),
        ("onnxscript", "'onnxscript>=0.7,<0.8'"),
        ("onnxruntime", "'onnxruntime>=1.32,<1.33'"),
    ),
}


class ExportError(RuntimeError):
    """The export cannot proceed; the message names the problem and the fix."""


def tool_versions() -> dict[str, str | None]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def weights_fingerprint(model: MeLoDy) -> str:
    """sha256 over the LM, DPD and VAE weights: ties a bundle to the eager model ``verify`` compares it with."""
    h = hashlib.sha256()
    for name in ("lm", "dpd", "vae"):
        for key, value in sorted(getattr(model, name).state_dict().items()):
            h.update(f"{name}.{key}".encode())
            h.update(value.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def preset_tokens(model: MeLoDy, presets=DEFAULT_PRESETS) -> list[dict]:
    """Precompute the 12 conditioning tokens of each preset prompt, so apps need no text encoder."""
    from ..models.conditioning import SentenceEmbeddingTextEncoder, TextEncoderUnavailable, default_text_encoder_dir

    try:
        encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())
    except TextEncoderUnavailable as exc:
        raise ExportError(
            f"the bundle's prompt presets need a text encoder: {exc} Or pass --presets FILE.json with "
            '[{"name": ..., "prompt": ..., "tokens": [12 codes]}].'
        ) from exc
    with torch.no_grad():
        codes = model.conditioner.tokens_from_prompt([p for _, p in presets], encoder)
    return [{"name": n, "prompt": p, "tokens": [int(x) for x in row]} for (n, p), row in zip(presets, codes.tolist())]


def export_bundle(
    model: MeLoDy,
    target: str,
    recipe: Recipe,
    out: str | Path,
    steps: int | None = None,
    verify: bool = True,
    force: bool = False,
    prefill_len: int = 32,
    sampler_artifact: bool = True,
    encoder_artifact: bool = False,
    presets: list[dict] | None = None,
    model_source: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Export ``model`` for ``target`` with ``recipe`` into the bundle directory ``out``.

    Returns the manifest. Raises :class:`ParityError` (and leaves no bundle) when the gate fails.
    """
    out = Path(out)
    why = unbuildable_reason(target)
    if why:
        raise ExportError(f"target {target} cannot be built on this host: {why}")
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; choose another --out or pass --force to replace it")
    if recipe.target != target:
        raise RecipeError(f"recipe {recipe.name} is for {recipe.target}, not {target}")
    config = model.config
    steps = config.steps if steps is None else steps
    if steps < 1:
        raise ExportError(f"--steps must be >= 1, got {steps}")
    prefill_len = min(prefill_len, config.lm.max_seq_len)
    presets = presets if presets is not None else preset_tokens(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    t_start = time.perf_counter()
    try:
        specs = adapters.method_specs(model, prefill_len, steps)
        components, quantized_layers, q_model, validation = _export_components(
            model, target, recipe, tmp, specs, steps, sampler_artifact, encoder_artifact, log
        )
        # The prompt RVQ travels with the bundle, so text prompts work wherever a text encoder is installed.
        save_component(tmp / CONDITIONER_DIR, model.config.conditioner, model.conditioner)
        manifest = _manifest(model, target, recipe, steps, prefill_len, components, quantized_layers, presets, tmp)
        manifest["model"]["source"] = model_source or {}
        manifest["model"]["weights_sha256"] = weights_fingerprint(model)
        validate_manifest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if verify and not can_run(target):
            log(f"parity not run: {can_run_reason(target)}; validating the converted programs instead")
            report = not_run_report(target, recipe, validation)
            (tmp / PARITY).write_text(json.dumps(report, indent=2, default=float) + "\n")
            log(format_not_run(report))
            if not report["gate"]["passed"]:
                raise ParityError(
                    f"validation failed for {target}/{recipe.name}: {'; '.join(report['gate']['failures'])}. "
                    "No bundle was written."
                )
        elif verify:
            log("verifying parity against the eager reference ...")
            from ..runtime.open import open_bundle

            backend, _ = open_bundle(tmp)
            report = run_parity(model, q_model, backend, manifest, recipe, log=log)
            if validation:
                report["validation"] = validation
            report["export_seconds"] = time.perf_counter() - t_start
            (tmp / PARITY).write_text(json.dumps(report, indent=2, default=float) + "\n")
            log(format_parity(report))
            del backend
            if not report["gate"]["passed"]:
                raise ParityError(
                    f"parity gate failed for {target}/{recipe.name}: {'; '.join(report['gate']['failures'])}. "
                    "No bundle was written. Keep sensitive layers in float (--keep-float) or use a wider recipe."
                )
        else:
            log("parity not verified (--no-verify): the bundle carries no parity.json")
        if verify and report.get("sampler_timing"):
            # Which sampler form ran faster here; the runtime follows it (docs/export.md).
            t = report["sampler_timing"]
            manifest["sampler"]["preferred"] = t["preferred"]
            manifest["sampler"]["preferred_measured"] = {k: t[k] for k in ("stepwise_ms", "unrolled_ms", "threads")}
            validate_manifest(manifest)
            log(
                f"sampler: unrolled {t['unrolled_ms']:.1f} ms vs {t['steps']} network calls {t['stepwise_ms']:.1f} ms "
                f"per window here -> the runtime uses the {t['preferred']} form"
            )
        if (tmp / PARITY).is_file():
            # parity.json is written after the manifest (the gate opens the bundle through it), so its
            # checksum is added now, before the rename; the runtime verifies every listed file.
            parity = {"sha256": sha256_tree(tmp / PARITY), "bytes": tree_size(tmp / PARITY)}
            manifest["files"] = dict(sorted({**manifest["files"], PARITY: parity}.items()))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise ExportError(
                f"ran out of disk space while writing the bundle under {out.parent}; free space or choose another "
                "--out. Nothing was written."
            ) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out} in {time.perf_counter() - t_start:.1f} s")
    return manifest


def _export_components(model, target, recipe, tmp, specs, steps, sampler_artifact, encoder_artifact, log):
    if target == "executorch-xnnpack":
        from ..quantization.torchao_quant import quantize_for_xnnpack
        from .executorch_export import export_component
        from .xnnpack_swaps import prepare_dpd_for_xnnpack, prepare_lm_for_xnnpack, prepare_vae_for_xnnpack

        lm, lm_q = quantize_for_xnnpack(prepare_lm_for_xnnpack(model.streaming_lm()), recipe, "lm.")
        # Before quantizing: the SRU swap slices the float gate projections (export/xnnpack_swaps.py).
        dpd, dpd_q = quantize_for_xnnpack(prepare_dpd_for_xnnpack(model.dpd), recipe, "dpd.")
        vae = prepare_vae_for_xnnpack(model.vae)  # never quantized (docs/export.md)
        q_model = None
        if recipe.quantized:
            q_model = _with_components(model, lm=lm, dpd=dpd)
        plan = {
            "lm": (
                {
                    "prefill": (adapters.LMPrefill(lm), specs["lm"]["prefill"]),
                    "decode": (adapters.LMDecode(lm), specs["lm"]["decode"]),
                },
                ("cache",),
            ),
            "dpd": ({"forward": (adapters.DPDWindow(dpd), specs["dpd"]["forward"])}, ()),
            "vae_decoder": ({"forward": (adapters.VAEDecodeChunk(vae), specs["vae_decoder"]["forward"])}, ()),
        }
        if sampler_artifact:
            plan["dpd_sampler"] = (
                {"forward": (adapters.DPDSampler(dpd, steps), specs["dpd_sampler"]["forward"])},
                (),
            )
        if encoder_artifact:
            plan["vae_encoder"] = ({"forward": (adapters.VAEEncode(model.vae), specs["vae_encoder"]["forward"])}, ())
        # Recorded in the manifest: which equal-function module swaps each lowered graph went through.
        forms = {
            "lm": "prepare_lm_for_xnnpack: cached attention as bmm with an additive mask",
            "dpd": "prepare_dpd_for_xnnpack: SRU loop form, attention as bmm, means as matmuls",
            "dpd_sampler": "prepare_dpd_for_xnnpack: SRU loop form, attention as bmm, means as matmuls",
            "vae_decoder": "prepare_vae_for_xnnpack: convolutions as 2-D over [B, C, 1, T]",
        }
        components = {}
        for name, (methods, shared) in plan.items():
            t0 = time.perf_counter()
            path = tmp / f"{name}.pte"
            size = export_component(methods, target, path, shared)
            log(f"  {name:<12} -> {path.name} ({size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
            components[name] = {
                "file": path.name,
                "methods": {m: spec.to_dict() for m, (_, spec) in methods.items()},
                **({"state": "kv cache: mutable buffers shared by prefill and decode"} if shared else {}),
                **({"export_form": f"export/xnnpack_swaps.py {forms[name]}"} if name in forms else {}),
            }
        return components, {"lm": lm_q, "dpd": dpd_q}, q_model, None
    if target in APPLE_TARGETS:
        from .coreml_export import export_coreml_components

        components, quantized, validation = export_coreml_components(
            model, target, recipe, tmp, specs, steps, sampler_artifact, encoder_artifact, log
        )
        return components, quantized, None, validation
    from .onnx_export import export_onnx_components

    components, quantized, q_model = export_onnx_components(
        model, recipe, tmp, specs, steps, sampler_artifact, encoder_artifact, log
    )
    return components, quantized, q_model, None


def unbuildable_reason(target: str) -> str | None:
    """Why this host cannot build ``target``, or None when it can."""
    if target not in HOST_TARGETS:
        return f"unknown target; valid targets: {', '.join(HOST_TARGETS)}"
    for module, pin in TARGET_MODULES[target]:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install {pin})"
    return None


def can_run(target: str) -> bool:
    return can_run_reason(target) is None


def can_run_reason(target: str) -> str | None:
    """Why this host cannot run a bundle of ``target`` (Core ML runs only on macOS/iOS)."""
    if target in APPLE_TARGETS and platform.system() != "Darwin":
        return f"Core ML runs only on macOS/iOS; this host is {platform.system()}"
    return None


def not_run_report(target: str, recipe: Recipe, validation: dict | None) -> dict:
    """parity.json for a bundle this host cannot run: says so, and gates on the structural validation."""
    failures = []
    for name, v in (validation or {}).get("components", {}).items():
        failures += [f"{name}: {f}" for f in v.get("failures", [])]
    return {
        "recipe": recipe.name,
        "target": target,
        "run": False,
        "reason": can_run_reason(target),
        "components": {},
        "validation": validation,
        "gate": {"passed": not failures, "failures": failures, "not_run": True, "thresholds": None},
    }


def format_not_run(report: dict) -> str:
    lines = [f"parity NOT RUN ({report['target']}, recipe {report['recipe']}): {report['reason']}"]
    comps = (report.get("validation") or {}).get("components", {})
    for name, v in comps.items():
        ratio = v.get("ratio")
        ratio_text = f", weights {ratio:.3f}x fp32" if isinstance(ratio, float) else ""
        ok = "ok" if not v.get("failures") else "FAILED: " + "; ".join(v["failures"])
        lines.append(f"  {name:<12} inputs/outputs {ok}{ratio_text} ({v.get('weight_bytes', 0) / 1e6:.2f} MB)")
    g = report["gate"]
    lines.append("  structural validation: PASSED" if g["passed"] else "  structural validation: FAILED")
    return "\n".join(lines)


def _with_components(model: MeLoDy, **parts) -> MeLoDy:
    clone = MeLoDy.__new__(MeLoDy)
    torch.nn.Module.__init__(clone)
    clone.config = model.config
    for name in ("lm", "dpd", "vae", "conditioner", "tokenizer"):
        setattr(clone, name, parts.get(name, getattr(model, name)))
    return clone.eval()


def _manifest(model, target, recipe, steps, prefill_len, components, quantized_layers, presets, tmp) -> dict:
    c = model.config
    d = c.dpd
    files = {p.name: {"sha256": sha256_tree(p), "bytes": tree_size(p)} for p in sorted(tmp.iterdir())}
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "melody-edge-bundle",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "target": target,
        "recipe": {**recipe.to_dict(), "quantized_layers": quantized_layers, "kept_float": list(recipe.keep_float)},
        "model": {"name": c.name, "config": c.to_dict()},
        "stream": {
            "sample_rate": c.sample_rate,
            "hop_length": c.hop_length,
            "latent_rate": c.latent_rate,
            "token_rate": c.token_rate,
            "latent_channels": d.latent_channels,
            "chunk_frames": d.chunk_frames,
            "chunks": d.chunks,
            "window_frames": d.window_frames,
            "window_tokens": d.window_tokens,
            "frames_per_token": d.frames_per_token,
            "prefix_levels": c.lm.prefix_levels,
            "prefix_codebook_size": c.lm.prefix_codebook_size,
            "vocab_size": c.lm.vocab_size,
            "null_token": d.null_token,
            "vae_context_frames": model.vae.context_frames,
            "lm_max_seq_len": c.lm.max_seq_len,
            "lm_prefill_len": prefill_len,
        },
        "sampler": {
            "steps": steps,
            "schedule": angle_schedule(steps),
            "guidance_scale": c.guidance_scale,
            "temperature": c.temperature,
            "top_k": c.top_k,
            # Classifier-free guidance on the LM, inside the exported LM program (models/lm_guidance.py).
            "lm_guidance_scale": c.lm_guidance_scale,
            "lm_null_codes": list(c.lm_null_codes),
        },
        "components": components,
        "conditioner": CONDITIONER_DIR,
        "files": files,
        "tools": tool_versions(),
        "presets": presets,
    }
