"""Per-clip training inputs derived from audio and captions, cached in the run directory.

The DPD trains on VAE latents and semantic tokens, the LM on caption codes and semantic tokens.
Computing them once per (data set, component weights) pair and caching them as safetensors keeps
each training step cheap. A cache entry is keyed by the sha256 of the weights that produced it, so a
retrained tokenizer or VAE never meets stale features.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from melody_edge.models.conditioning import PromptConditioner, TextEncoder
from melody_edge.models.semantic_tokenizer import CentroidTokenizer
from melody_edge.models.vae import VAE

from .data import TRAIN, AudioSet, Clip
from .metrics import token_chroma_table
from .synth_catalog import CAPTION_VARIANTS, caption_variants

Log = Callable[[str], None]


def weights_digest(component_dir: Path) -> str:
    return hashlib.sha256((Path(component_dir) / "model.safetensors").read_bytes()).hexdigest()[:16]


def clips_fingerprint(clips: list[Clip]) -> str:
    """What a cache entry was computed from: the clips' ids, files and captions, in order."""
    text = "\n".join(f"{c.id}\t{c.path.name}\t{c.caption}" for c in clips)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached(
    path: Path, build: Callable[[], dict[str, Tensor]], clips: list[Clip], log: Log | None
) -> dict[str, Tensor]:
    """The entry at ``path`` if it was computed from these ``clips``, else ``build()`` saved there.

    The file name holds the weights' digest; the clips' fingerprint lives in its metadata, so a run
    directory reused with another data set (same clip ids, other audio) recomputes instead of
    training on the other set's features. An entry written before fingerprints were stored is kept
    when it holds exactly these clip ids.
    """
    fingerprint = clips_fingerprint(clips)
    if path.is_file():
        with safe_open(str(path), framework="pt") as fh:
            stored = (fh.metadata() or {}).get("clips")
            ids = set(fh.keys())
        legacy_match = stored is None and ids == {c.id for c in clips}
        if stored == fingerprint or legacy_match:
            return load_file(str(path))
        if log:
            log(f"{path.name} was computed from other clips (another data set?); computing it again ...")
    elif log:
        log(f"computing {path.name} ...")
    tensors = {k: v.contiguous() for k, v in build().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # ranks of a DDP run may write the same entry at once
    save_file(tensors, str(tmp), metadata={"clips": fingerprint})
    tmp.replace(path)
    return tensors


def per_clip(audio: AudioSet, fn: Callable[[Tensor], Tensor], what: str, log: Log | None) -> list[Tensor]:
    """``fn`` of every clip (``[1, N]`` in), logging progress every tenth of the clips: a learned tokenizer's
    encoder (MERT on a CPU) takes seconds per clip."""
    out, n = [], len(audio.audio)
    for i, clip in enumerate(audio.audio):
        out.append(fn(clip[None]))
        if log and n >= 20 and ((i + 1) % max(1, n // 10) == 0 or i + 1 == n):
            log(f"  {what}: {i + 1}/{n} clips")
    return out


def semantic_tokens(
    cache: Path, split: str, audio: AudioSet, tokenizer: CentroidTokenizer, digest: str, log: Log | None = None
) -> list[Tensor]:
    """Tokens of every clip of the split: list of long [T_i]."""

    def build() -> dict[str, Tensor]:
        tokens = per_clip(audio, lambda a: tokenizer.tokenize(a)[0], f"{split} tokens", log)
        return {c.id: t for c, t in zip(audio.clips, tokens, strict=True)}

    got = _cached(cache / f"tokens-{split}-{digest}.safetensors", build, audio.clips, log)
    return [got[c.id] for c in audio.clips]


def training_token_chroma(
    cache: Path, train: AudioSet, tokenizer: CentroidTokenizer, tokenizer_dir: Path, vocab_size: int, log: Log | None
) -> Tensor:
    """The token -> mean-chroma table [vocab_size, 12] of the training audio, from its cached tokens: how the
    key probes (``benchmarks/*key*``) read a key off semantic tokens alone."""
    tokens = semantic_tokens(cache, TRAIN, train, tokenizer, weights_digest(Path(tokenizer_dir)), log)
    return token_chroma_table(train.audio, tokens, vocab_size, train.sample_rate, tokenizer.hop_length)


@torch.no_grad()
def vae_latents(
    cache: Path, split: str, audio: AudioSet, vae: VAE, digest: str, log: Log | None = None
) -> list[Tensor]:
    """Normalised posterior-mean latents of every clip, in the DPD's space: list of [C, F_i].

    The cache holds them before the VAE's ``latent_gain`` (which lives in its config, not in the
    weights the cache is keyed by), so a gain change never reads stale latents.
    """
    hop = vae.hop_length
    gain = vae.config.latent_gain

    def build() -> dict[str, Tensor]:
        # One clip at a time: batching measured slower on a CPU (1.54 against 0.96 s per 10 s clip for
        # 8 clips on one thread), likely because the encoder's full-rate activations then outgrow the caches.
        latents = per_clip(
            audio, lambda a: vae.latent(a[:, : a.shape[-1] // hop * hop])[0] / gain, f"{split} latents", log
        )
        return {c.id: z for c, z in zip(audio.clips, latents, strict=True)}

    got = _cached(cache / f"latents-{split}-{digest}.safetensors", build, audio.clips, log)
    return [got[c.id] * gain for c in audio.clips]


def caption_codes(
    cache: Path,
    split: str,
    clips: list[Clip],
    conditioner: PromptConditioner,
    encoder: TextEncoder,
    digest: str,
    log: Log | None = None,
) -> tuple[Tensor, Tensor]:
    """Prefix codes of every clip's caption ``[N, levels]`` and of its phrasings ``[N, V, levels]``."""

    def build() -> dict[str, Tensor]:
        variants = [clip_captions(c) for c in clips]
        flat = [text for v in variants for text in v]
        emb = embed_texts(flat, encoder)
        codes = conditioner.tokens_from_embeddings(emb).reshape(len(clips), len(variants[0]), -1)
        return {"caption": codes[:, 0].contiguous(), "variants": codes}

    got = _cached(cache / f"codes-{split}-{digest}.safetensors", build, clips, log)
    return got["caption"], got["variants"]


def clip_captions(clip: Clip) -> list[str]:
    """The clip's own caption first, then its other phrasings (the caption repeated when the index has no
    facts to build them from)."""
    try:
        extra = caption_variants(clip.facts)
    except (KeyError, TypeError, IndexError):
        extra = []
    out = [clip.caption, *[t for t in extra if t != clip.caption]]
    return (out + [clip.caption] * CAPTION_VARIANTS)[:CAPTION_VARIANTS]


def embed_texts(texts: list[str], encoder: TextEncoder, batch: int = 64) -> Tensor:
    return torch.cat([encoder.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)])


@torch.no_grad()
def fit_token_prior(
    latents: list[Tensor], tokens: list[Tensor], vocab: int, frames_per_token: int, shrink: float = 10.0
) -> tuple[Tensor, Tensor]:
    """Per-token mean and variance of the clean latent (the DPD's ``token_prior``), each [vocab + 1, C].

    latents: per clip [C, F_i] in the DPD's space; tokens: per clip [S_i], token s covering latent frames
    [s * frames_per_token, (s + 1) * frames_per_token). A token seen n times is pulled toward the global
    statistics with the weight of ``shrink`` occurrences (rare tokens get the global prior, not noise).
    The last row (the null token) holds the global mean and variance.
    """
    if not latents:
        raise ValueError("no training latents to fit the token prior on")
    if not shrink > 0:
        raise ValueError(f"shrink must be > 0 (unseen tokens take the global statistics), got {shrink}")
    channels = latents[0].shape[0]
    total = torch.zeros(vocab, channels, dtype=torch.float64)
    square = torch.zeros(vocab, channels, dtype=torch.float64)
    count = torch.zeros(vocab, dtype=torch.float64)
    for z, tok in zip(latents, tokens, strict=True):
        n = min(tok.numel(), z.shape[1] // frames_per_token)
        frames = z[:, : n * frames_per_token].double().reshape(channels, n, frames_per_token)
        ids = tok[:n].long()
        total.index_add_(0, ids, frames.sum(2).T)
        square.index_add_(0, ids, frames.pow(2).sum(2).T)
        count.index_add_(0, ids, torch.full((n,), float(frames_per_token), dtype=torch.float64))
    frames_all = count.sum()
    if frames_all == 0:
        raise ValueError("the training latents hold no whole token span: clips are shorter than one token")
    g_mean = total.sum(0) / frames_all
    g_var = square.sum(0) / frames_all - g_mean.pow(2)
    prior = shrink * frames_per_token
    mean = (total + prior * g_mean) / (count[:, None] + prior)
    # Second moment shrunk the same way, so a rare token's variance is the global one around its own mean.
    second = (square + prior * (g_var + g_mean.pow(2))) / (count[:, None] + prior)
    var = (second - mean.pow(2)).clamp_min(1e-4 * float(g_var.mean()))
    return (
        torch.cat([mean, g_mean[None]]).float(),
        torch.cat([var, g_var.clamp_min(1e-8)[None]]).float(),
    )
