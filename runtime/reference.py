"""Generation with the PyTorch reference (eager backend): what ``melody-edge generate`` runs."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.melody import load_model
from .eager import EagerBackend
from .pipeline import GenerationSettings
from .session import generate_to_wav


def resolve_conditioning(model, prompt: str | None, tokens: str | None) -> list[int]:
    """Explicit ``tokens`` win; otherwise the prompt goes through the text encoder and the RVQ."""
    from ..models.conditioning import SentenceEmbeddingTextEncoder, default_text_encoder_dir

    if tokens is not None:
        return [int(x) for x in model.conditioner.parse_tokens(tokens)[0].tolist()]
    if not prompt:
        raise ValueError("give a --prompt or --tokens")
    encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())
    with torch.no_grad():
        codes = model.conditioner.tokens_from_prompt([prompt], encoder)
    return [int(x) for x in codes[0].tolist()]


def generate_reference(
    *,
    checkpoint: str | Path | None,
    config_name: str | None,
    prompt: str | None,
    tokens: str | None,
    seconds: float,
    out: str | Path,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    first_steps: int = 0,
    temperature: float | None = None,
    top_k: int | None = None,
    lm_guidance: float | None = None,
    progress: bool = True,
) -> dict:
    """``lm_guidance``: classifier-free guidance on the LM (None: the checkpoint's ``lm_guidance_scale``)."""
    model = load_model(config_name=config_name, checkpoint=checkpoint)
    c = model.config
    settings = GenerationSettings(
        seconds=seconds,
        steps=c.steps if steps is None else steps,
        guidance_scale=c.guidance_scale if guidance_scale is None else guidance_scale,
        temperature=c.temperature if temperature is None else temperature,
        top_k=c.top_k if top_k is None else top_k,
        seed=seed,
        first_steps=first_steps,
    )
    codes = resolve_conditioning(model, prompt, tokens)
    backend = EagerBackend(model, lm_guidance)
    extra = {
        "model": c.name,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "prompt": prompt,
        "lm_guidance_scale": backend.lm_guidance,
    }
    return generate_to_wav(backend, backend.spec, codes, settings, out, progress=progress, extra=extra)
