"""Generation from an exported bundle: what ``melody-edge generate --bundle`` runs."""

from __future__ import annotations

from pathlib import Path

import torch

from .manifest import BundleError, load_manifest
from .open import open_bundle
from .pipeline import GenerationSettings
from .session import generate_to_wav


def bundle_conditioning(bundle: str | Path, manifest: dict, prompt: str | None, tokens: str | None) -> tuple[list, str]:
    """Conditioning codes from (in order) explicit ``tokens``, a preset name, or text through the bundle's RVQ.

    Returns (codes, how) where ``how`` says which source was used.
    """
    from ..models.conditioning import ConditionerConfig, PromptConditioner, parse_token_list

    stream = manifest["stream"]
    if tokens is not None:
        codes = parse_token_list(tokens, stream["prefix_levels"], stream["prefix_codebook_size"])
        return codes[0].tolist(), "explicit tokens"
    if not prompt:
        preset = manifest["presets"][0]
        return list(preset["tokens"]), f"default preset {preset['name']!r}"
    for preset in manifest["presets"]:
        if prompt.strip().lower() in (preset["name"].lower(), preset.get("prompt", "").lower()):
            return list(preset["tokens"]), f"preset {preset['name']!r}"
    conditioner_dir = manifest.get("conditioner")
    if not conditioner_dir:
        names = ", ".join(p["name"] for p in manifest["presets"])
        raise BundleError(f"{prompt!r} is not a preset of this bundle ({names}) and the bundle has no prompt RVQ")
    from ..models.checkpoint import load_component
    from ..models.conditioning import SentenceEmbeddingTextEncoder, default_text_encoder_dir

    _, conditioner = load_component(Path(bundle) / conditioner_dir, ConditionerConfig, PromptConditioner)
    encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())
    with torch.no_grad():
        codes = conditioner.tokens_from_prompt([prompt], encoder)
    return codes[0].tolist(), "text encoder + the bundle's RVQ"


def generate_from_bundle(
    bundle: str | Path,
    *,
    prompt: str | None,
    tokens: str | None,
    seconds: float,
    out: str | Path,
    backend_name: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    first_steps: int = 0,
    temperature: float | None = None,
    top_k: int | None = None,
    lm_guidance: float | None = None,
    progress: bool = True,
) -> dict:
    """``lm_guidance``: must equal the bundle's (the exported LM program guides with a fixed scale)."""
    manifest = load_manifest(bundle)
    sampler = manifest["sampler"]
    baked = float(sampler.get("lm_guidance_scale", 1.0))
    if lm_guidance is not None and float(lm_guidance) != baked:
        raise BundleError(
            f"this bundle's LM guides with scale {baked:g}, fixed when it was exported; re-export with "
            f"`melody-edge export --lm-cfg {lm_guidance:g}` or drop --lm-cfg"
        )
    backend, manifest = open_bundle(bundle, backend_name)
    settings = GenerationSettings(
        seconds=seconds,
        steps=sampler["steps"] if steps is None else steps,
        guidance_scale=sampler["guidance_scale"] if guidance_scale is None else guidance_scale,
        temperature=sampler["temperature"] if temperature is None else temperature,
        top_k=sampler["top_k"] if top_k is None else top_k,
        seed=seed,
        first_steps=first_steps,
    )
    codes, source = bundle_conditioning(bundle, manifest, prompt, tokens)
    extra = {
        "bundle": str(bundle),
        "target": manifest["target"],
        "recipe": manifest["recipe"]["name"],
        "model": manifest["model"]["name"],
        "prompt": prompt,
        "conditioning_source": source,
        "lm_guidance_scale": baked,
    }
    return generate_to_wav(backend, backend.spec, codes, settings, out, progress=progress, extra=extra)
