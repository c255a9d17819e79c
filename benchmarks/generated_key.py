"""Does generated audio keep the prompt's key? Stream held-out captions at several LM guidance scales.

    python benchmarks/generated_key.py --data out/data/demo --cache out/runs/chroma/cache \
        --lm-guidance 1 --lm-guidance 3 --clips 48 --seeds 2 --json out/generated_key.json

``train evaluate`` generates 24 clips once; one clip there is 4 points of key accuracy. This script
streams more of them side by side. It takes the held-out captions of distinct works, as ``train
evaluate`` picks them (up to ``--clips``), and several seeds. At each LM guidance scale it streams
``--seconds`` of audio through the eager runtime, with the checkpoint's sampler settings. The captions,
seeds and DPD noise are the same for every scale, so the rows differ only in the LM's guidance. Two
keys are read: the audio's (chroma + Krumhansl-Schmuckler, ``train evaluate``'s estimator) and that of
the LM's tokens through the token -> mean-chroma table of the training audio (from the trainer's
feature cache, ``--cache``).

``--real-tokens`` adds a row without the LM: each held-out clip rendered by the DPD and the VAE from its
own semantic tokens (the checkpoint's steps and guidance, DPD noise seeded 0..N-1, as ``train evaluate``
renders them), and the key of those tokens through the same table. It measures the renderer alone, on
the same captions and seeds; with no ``--lm-guidance`` it is the only row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from melody_edge.models.conditioning import SentenceEmbeddingTextEncoder, default_text_encoder_dir
from melody_edge.models.melody import MeLoDy
from melody_edge.runtime.eager import EagerBackend
from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator
from melody_edge.training import features
from melody_edge.training.data import TRAIN, VALIDATION, AudioSet, read_index, split_clips
from melody_edge.training.evaluate import _distinct_works, _key_ok, sample_from_tokens
from melody_edge.training.metrics import estimate_key, key_from_tokens

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "melody_edge" / "checkpoints" / "demo"


@torch.no_grad()
def stream_keys(
    model: MeLoDy,
    codes: list[list[int]],
    facts: list[dict],
    table: torch.Tensor,
    scale: float,
    seeds: int,
    seconds: float,
    temperature: float,
    top_k: int,
    log=print,
    first_seed: int = 0,
) -> dict:
    """Key hits of the audio and of the LM's tokens for every caption and seed (``first_seed`` onwards), at LM
    guidance ``scale``."""
    backend = EagerBackend(model, lm_guidance=scale)
    streamer = StreamingGenerator(backend, backend.spec)
    c, sr = model.config, model.config.sample_rate
    audio_hits, token_hits = [], []
    for seed in range(first_seed, first_seed + seeds):
        settings = GenerationSettings(
            seconds=seconds,
            steps=c.steps,
            guidance_scale=c.guidance_scale,
            temperature=temperature,
            top_k=top_k,
            seed=seed,
        )
        for j, (prompt, fact) in enumerate(zip(codes, facts, strict=True)):
            chunks = list(streamer.stream(prompt, settings))
            audio = np.concatenate([ch.audio for ch in chunks])
            tokens = torch.tensor([t for ch in chunks for t in ch.tokens], dtype=torch.long)
            audio_hits.append(_key_ok(estimate_key(torch.from_numpy(audio), sr), fact))
            token_hits.append(_key_ok(key_from_tokens(tokens, table), fact))
            log(f"[generated_key] lm cfg {scale:g} seed {seed} clip {j + 1}/{len(codes)}")
    return _row(scale, audio_hits, token_hits)


@torch.no_grad()
def real_token_keys(
    model: MeLoDy,
    audio: list[torch.Tensor],
    facts: list[dict],
    table: torch.Tensor,
    seeds: int,
    log=print,
    first_seed: int = 0,
) -> dict:
    """Key hits of each held-out clip rendered by the DPD and the VAE from its own semantic tokens (no LM), and
    of those tokens through the table. audio: the clips, [N_i] each."""
    sr = model.config.sample_rate
    audio_hits, token_hits = [], []
    for seed in range(first_seed, first_seed + seeds):
        for j, (clip, fact) in enumerate(zip(audio, facts, strict=True)):
            tokens = model.tokenizer.tokenize(clip[None])[0]
            rendered = model.vae.decode(sample_from_tokens(model, model.dpd, tokens, seed))[0]
            audio_hits.append(_key_ok(estimate_key(rendered, sr), fact))
            token_hits.append(_key_ok(key_from_tokens(tokens, table), fact))
            log(f"[generated_key] real tokens seed {seed} clip {j + 1}/{len(audio)}")
    return _row("real tokens", audio_hits, token_hits)


def with_dpd_sampler(model: MeLoDy, guidance: float | None = None, steps: int | None = None) -> MeLoDy:
    """Replace the DPD sampler's guidance and steps in ``model``'s config, in place (None: kept); both rows read them.

    In place: ``run`` applies it to the model it has just loaded, which nothing else holds."""
    overrides = {"guidance_scale": guidance, "steps": steps}
    model.config = model.config.replace(**{k: v for k, v in overrides.items() if v is not None})
    return model


def _row(name: float | str, audio_hits: list[tuple[bool, bool]], token_hits: list[tuple[bool, bool]]) -> dict:
    """One table row; ``streams`` keeps each stream's (audio, tokens) key hit, seed-major, so two checkpoints
    run on the same captions and seeds can be compared stream by stream."""
    return {
        "lm_guidance": name,
        "audio": {"key": _mean(audio_hits, 0), "same_tonic": _mean(audio_hits, 1), "hits": _count(audio_hits)},
        "lm_tokens": {"key": _mean(token_hits, 0), "same_tonic": _mean(token_hits, 1), "hits": _count(token_hits)},
        "samples": len(audio_hits),
        "streams": [[int(a[0]), int(t[0])] for a, t in zip(audio_hits, token_hits, strict=True)],
    }


def _mean(hits: list[tuple[bool, bool]], k: int) -> float:
    return sum(h[k] for h in hits) / max(len(hits), 1)


def _count(hits: list[tuple[bool, bool]]) -> int:
    return sum(h[0] for h in hits)


def run(
    checkpoint: Path,
    data: Path,
    cache: Path,
    scales: list[float],
    clips: int,
    seeds: int,
    seconds: float,
    real_tokens: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    dpd_guidance: float | None = None,
    steps: int | None = None,
    first_seed: int = 0,
) -> dict:
    """``temperature`` and ``top_k`` of the LM's sampling, ``dpd_guidance`` and ``steps`` of the DPD's sampler
    (both rows): the checkpoint's unless given."""
    model = with_dpd_sampler(MeLoDy.load(checkpoint).eval(), dpd_guidance, steps)
    temperature = model.config.temperature if temperature is None else temperature
    top_k = model.config.top_k if top_k is None else top_k
    sr = model.config.sample_rate
    index = read_index(data)
    train = AudioSet(split_clips(index, TRAIN), sr)
    val_clips = split_clips(index, VALIDATION)
    table = features.training_token_chroma(
        cache, train, model.tokenizer, Path(checkpoint) / "tokenizer", model.config.lm.vocab_size, print
    )
    chosen = _distinct_works(val_clips, clips)
    encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())
    codes = model.conditioner.tokens_from_prompt([val_clips[i].caption for i in chosen], encoder).tolist()
    facts = [val_clips[i].facts for i in chosen]
    report: dict = {
        "checkpoint": str(checkpoint),
        "clips": len(chosen),
        "seeds": seeds,
        "first_seed": first_seed,
        "seconds": seconds,
        "checkpoint_lm_guidance": model.config.lm_guidance_scale,
        "temperature": temperature,
        "top_k": top_k,
        "dpd_guidance": model.config.guidance_scale,
        "steps": model.config.steps,
        "chance": {"key": 1 / 24, "same_tonic": 1 / 12},
        "rows": [],
    }
    for scale in scales:
        t0 = time.monotonic()
        row = stream_keys(model, codes, facts, table, scale, seeds, seconds, temperature, top_k, first_seed=first_seed)
        row["wall_seconds"] = round(time.monotonic() - t0, 1)
        report["rows"].append(row)
    if real_tokens:
        t0 = time.monotonic()
        val = AudioSet([val_clips[i] for i in chosen], sr)
        row = real_token_keys(model, val.audio, facts, table, seeds, first_seed=first_seed)
        row["wall_seconds"] = round(time.monotonic() - t0, 1)
        report["rows"].append(row)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="feature cache (a training run's RUN/cache)")
    ap.add_argument(
        "--lm-guidance",
        type=float,
        action="append",
        help="LM guidance scale (repeatable; default 1, 3, or none with --real-tokens)",
    )
    ap.add_argument("--real-tokens", action="store_true", help="add a row rendered from the clips' own tokens (no LM)")
    ap.add_argument("--clips", type=int, default=48, help="held-out captions of distinct works (at most)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run first-seed .. first-seed + seeds - 1")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--temperature", type=float, help="LM sampling temperature (default: the checkpoint's)")
    ap.add_argument("--top-k", type=int, help="LM top-k, 0 = off (default: the checkpoint's)")
    ap.add_argument("--dpd-guidance", type=float, help="the DPD sampler's guidance (default: the checkpoint's)")
    ap.add_argument("--steps", type=int, help="the DPD sampler's steps (default: the checkpoint's)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    scales = args.lm_guidance or ([] if args.real_tokens else [1.0, 3.0])
    report = run(
        args.checkpoint,
        args.data,
        args.cache,
        scales,
        args.clips,
        args.seeds,
        args.seconds,
        args.real_tokens,
        args.temperature,
        args.top_k,
        args.dpd_guidance,
        args.steps,
        args.first_seed,
    )
    n = report["rows"][0]["samples"]
    seeds = f"{report['seeds']} seeds from {report['first_seed']}"
    print(f"\nkey accuracy over {report['clips']} captions x {seeds} = {n} clips (same tonic)")
    print(f"LM temperature {report['temperature']:g}, top-k {report['top_k'] or 'off'}; ", end="")
    print(f"DPD guidance {report['dpd_guidance']:g}, {report['steps']} steps")
    print(f"{'LM guidance':>11} {'audio':>16} {'tokens':>16} {'wall s':>8}")
    for row in report["rows"]:
        a, t = row["audio"], row["lm_tokens"]
        name = row["lm_guidance"] if isinstance(row["lm_guidance"], str) else f"{row['lm_guidance']:g}"
        print(
            f"{name:>11} {a['key']:>7.1%} ({a['same_tonic']:>4.0%}) "
            f"{t['key']:>8.1%} ({t['same_tonic']:>4.0%}) {row['wall_seconds']:>8.0f}"
        )
    print("chance 4.2 % (8 %)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
