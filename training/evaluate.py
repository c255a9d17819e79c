"""The model card's figures, measured on the held-out split: ``melody-edge train evaluate``.

VAE reconstruction (multi-resolution log-mel L1, mel SNR), LM validation cross-entropy against the
uniform and unigram baselines, DPD velocity loss per angle range, and prompt adherence: clips
generated from held-out captions, their key estimated from chroma (Krumhansl-Schmuckler) and
compared with the caption's key, beside the same estimator on the real held-out audio, on its VAE
reconstruction (which tells whether the VAE alone already loses the key) and chance; tempo the same way,
from the onset envelope's autocorrelation, against a shuffled-caption baseline.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from melody_edge.models.conditioning import SentenceEmbeddingTextEncoder, default_text_encoder_dir
from melody_edge.models.diffusion import ddim_sample
from melody_edge.models.lm import lm_loss
from melody_edge.models.melody import MeLoDy
from melody_edge.runtime.eager import EagerBackend
from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator

from .data import TRAIN, VALIDATION, AudioSet, read_index, split_clips
from .metrics import (
    dpd_loss_by_angle,
    dpd_token_use,
    estimate_key,
    estimate_tempo,
    key_from_tokens,
    log_mel,
    mel_snr_db,
    multires_log_mel_distance,
    tempo_ok,
    token_chroma_table,
    unigram_cross_entropy,
)
from .train_seq import window_starts

Log = Callable[[str], None]


def _key_ok(estimate: tuple[int, str], facts: dict[str, Any]) -> tuple[bool, bool]:
    """(exact key and mode, same tonic)."""
    return estimate == (int(facts["tonic_pc"]), facts["mode"]), estimate[0] == int(facts["tonic_pc"])


def _tempo_rates(estimates: list[float], facts: list[dict[str, Any]]) -> dict[str, float] | None:
    """MIREX accuracy 1 (within 8 %) and 2 (also at x2, x1/2, x3, x1/3) over clips whose caption has a tempo."""
    pairs = [(e, float(f["tempo_bpm"])) for e, f in zip(estimates, facts, strict=True) if f.get("tempo_bpm")]
    if not pairs:
        return None
    hits = [tempo_ok(e, t) for e, t in pairs]
    return {"accuracy1": _rate(hits, 0), "accuracy2": _rate(hits, 1), "clips": len(pairs)}


@torch.no_grad()
def evaluate_checkpoint(
    checkpoint: Path,
    data: Path,
    out: Path,
    generate_clips: int = 24,
    seconds: float = 10.0,
    seed: int = 0,
    log: Log = print,
) -> dict[str, Any]:
    """Compute every figure; write ``out/model_card.json``, spectrogram PNGs and a few WAVs."""
    t0 = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = MeLoDy.load(checkpoint)
    cfg = model.config
    sr = cfg.sample_rate
    clips = read_index(data)
    val = AudioSet(split_clips(clips, VALIDATION), sr)
    train = AudioSet(split_clips(clips, TRAIN), sr)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "validation_clips": len(val)}

    log("[evaluate] VAE reconstruction")
    hop = cfg.hop_length
    n = min(a.numel() for a in val.audio) // hop * hop
    real = torch.stack([a[:n] for a in val.audio])
    recon = torch.cat([model.vae.decode(model.vae.latent(real[i : i + 8])) for i in range(0, len(real), 8)])
    report["vae"] = {
        "log_mel_l1": multires_log_mel_distance(real, recon, sr),
        "mel_snr_db": mel_snr_db(real, recon, sr),
        "clips": len(real),
        "seconds_each": n / sr,
    }

    log("[evaluate] semantic tokens, LM cross-entropy")
    tok_val = [model.tokenizer.tokenize(a[None])[0] for a in val.audio]
    tok_train = [model.tokenizer.tokenize(a[None])[0] for a in train.audio]
    encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())
    codes_val = model.conditioner.tokens_from_prompt([c.caption for c in val.clips], encoder)
    seq = min(cfg.lm.max_seq_len - cfg.lm.prefix_levels, min(t.numel() for t in tok_val))
    ce = float(lm_loss(model.lm, codes_val, torch.stack([t[:seq] for t in tok_val])))
    report["lm"] = {
        "validation_ce": ce,
        "uniform_ce": math.log(cfg.lm.vocab_size),
        "unigram_ce": unigram_cross_entropy(torch.cat(tok_train), torch.cat(tok_val), cfg.lm.vocab_size),
        "perplexity": math.exp(ce),
    }

    log("[evaluate] DPD loss per angle range")
    d = cfg.dpd
    latents = [model.vae.latent(a[None, : a.numel() // hop * hop])[0] for a in val.audio]
    picks = window_starts([t.numel() for t in tok_val], d.window_tokens)[:16]
    z0 = torch.stack(
        [latents[i][:, s * d.frames_per_token : s * d.frames_per_token + d.window_frames] for i, s in picks]
    )
    tokens = torch.stack([tok_val[i][s : s + d.window_tokens] for i, s in picks])
    report["dpd"] = dpd_loss_by_angle(model.dpd, z0, tokens, bins=4, seed=seed)
    report["dpd"]["windows"] = len(picks)
    report["dpd"]["latent_gain"] = cfg.vae.latent_gain
    report["dpd_token_use"] = dpd_token_use(model.dpd, z0, tokens, seed=seed)

    log("[evaluate] key and tempo of the real held-out audio and of its VAE reconstruction")
    facts = [c.facts for c in val.clips]
    real_hits = [_key_ok(estimate_key(a, sr), f) for a, f in zip(val.audio, facts, strict=True)]
    recon_hits = [_key_ok(estimate_key(a, sr), f) for a, f in zip(recon, facts, strict=True)]
    real_bpm = [estimate_tempo(a, sr) for a in val.audio]
    recon_bpm = [estimate_tempo(a, sr) for a in recon]
    chosen = _distinct_works(val.clips, generate_clips)
    log(f"[evaluate] generating {len(chosen)} clips of {seconds:g} s from held-out captions")
    backend = EagerBackend(model)
    settings = GenerationSettings(seconds=seconds, steps=cfg.steps, guidance_scale=cfg.guidance_scale, seed=seed)
    # The DPD and VAE alone, from the real audio's own semantic tokens: separates what the DPD loses
    # from what the LM's tokens lose.
    log(f"[evaluate] rendering {len(chosen)} clips from their real semantic tokens (DPD + VAE, no LM)")
    dpd_bpm, dpd_hits = [], []
    for i in chosen:
        if tok_val[i].numel() < d.window_tokens:
            raise ValueError(
                f"held-out clip {val.clips[i].id} has {tok_val[i].numel()} semantic tokens, fewer than one "
                f"DPD window ({d.window_tokens}); build the data set with clips of at least "
                f"{d.window_frames / cfg.vae.latent_rate:g} s"
            )
        audio = render_tokens(model, tok_val[i], seed)
        dpd_hits.append(_key_ok(estimate_key(audio, sr), val.clips[i].facts))
        dpd_bpm.append(estimate_tempo(audio, sr))
    # The key the tokens alone imply (each token's mean chroma over the training audio): what the
    # tokenizer keeps of the key, and, for the LM's tokens, whether the LM follows the prompt's key.
    table = token_chroma_table(train.audio, tok_train, cfg.lm.vocab_size, sr, model.tokenizer.hop_length)
    real_tok_hits = [_key_ok(key_from_tokens(t, table), f) for t, f in zip(tok_val, facts, strict=True)]
    gen_hits, gen_bpm, generated, lm_tok_hits = [], [], [], []
    codes = model.conditioner.tokens_from_prompt([val.clips[i].caption for i in chosen], encoder)
    streamer = StreamingGenerator(backend, backend.spec)
    for j, i in enumerate(chosen):
        chunks = list(streamer.stream([int(x) for x in codes[j]], settings))
        audio = np.concatenate([ch.audio for ch in chunks])
        lm_tokens = torch.tensor([t for ch in chunks for t in ch.tokens], dtype=torch.long)
        lm_tok_hits.append(_key_ok(key_from_tokens(lm_tokens, table), val.clips[i].facts))
        generated.append(audio)
        gen_hits.append(_key_ok(estimate_key(torch.from_numpy(audio), sr), val.clips[i].facts))
        gen_bpm.append(estimate_tempo(torch.from_numpy(audio), sr))
        log(f"[evaluate]   {j + 1}/{len(chosen)}: {val.clips[i].caption!r}")
    report["key_accuracy"] = {
        "generated": _rate(gen_hits, 0),
        "generated_same_tonic": _rate(gen_hits, 1),
        "dpd_from_real_tokens": _rate(dpd_hits, 0),
        "dpd_from_real_tokens_same_tonic": _rate(dpd_hits, 1),
        "lm_tokens_chroma_lookup": _rate(lm_tok_hits, 0),
        "lm_tokens_chroma_lookup_same_tonic": _rate(lm_tok_hits, 1),
        "real_tokens_chroma_lookup": _rate(real_tok_hits, 0),
        "real_tokens_chroma_lookup_same_tonic": _rate(real_tok_hits, 1),
        "real_heldout": _rate(real_hits, 0),
        "real_heldout_same_tonic": _rate(real_hits, 1),
        "vae_reconstruction": _rate(recon_hits, 0),
        "vae_reconstruction_same_tonic": _rate(recon_hits, 1),
        "chance": 1 / 24,
        "chance_same_tonic": 1 / 12,
        "generated_clips": len(chosen),
        "real_clips": len(real_hits),
        "finite": bool(all(np.isfinite(a).all() for a in generated)),
    }
    shuffled = facts[len(facts) // 2 :] + facts[: len(facts) // 2]  # every clip against another clip's caption
    report["tempo_accuracy"] = {
        "generated": _tempo_rates(gen_bpm, [val.clips[i].facts for i in chosen]),
        "dpd_from_real_tokens": _tempo_rates(dpd_bpm, [val.clips[i].facts for i in chosen]),
        "real_heldout": _tempo_rates(real_bpm, facts),
        "vae_reconstruction": _tempo_rates(recon_bpm, facts),
        "shuffled_captions": _tempo_rates(real_bpm, shuffled),
        "estimator": "onset-envelope autocorrelation, 50-220 bpm, log-normal prior at 120 bpm",
    }
    report["examples"] = _write_examples(out, val, chosen, generated, sr)
    report["wall_seconds"] = round(time.monotonic() - t0, 1)
    (out / "model_card.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def render_tokens(model: MeLoDy, tokens: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One window of semantic tokens [S >= window] -> audio [window seconds] through the DPD sampler and the VAE."""
    return model.vae.decode(sample_from_tokens(model, model.dpd, tokens, seed))[0]


def sample_from_tokens(model: MeLoDy, dpd, tokens: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One window of semantic tokens [S >= window] -> the latent window [1, C, L] that ``dpd`` samples from noise
    (seeded), with the checkpoint's steps and guidance."""
    d = model.config.dpd
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(1, d.latent_channels, d.window_frames, generator=gen)
    angles = torch.full((1, d.window_frames), math.pi / 2)
    return ddim_sample(
        dpd,
        z,
        angles,
        torch.ones(1, d.window_frames, dtype=torch.bool),
        tokens[None, : d.window_tokens].long(),
        model.config.steps,
        model.config.guidance_scale,
        d.null_token,
    )


def _rate(hits: list[tuple[bool, bool]], k: int) -> float:
    return sum(h[k] for h in hits) / max(len(hits), 1)


def _distinct_works(clips, limit: int) -> list[int]:
    seen, out = set(), []
    for i, c in enumerate(clips):
        key = (c.facts.get("work"), c.facts.get("key"))
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out[:limit]


def _write_examples(out: Path, val: AudioSet, chosen: list[int], generated: list[np.ndarray], sr: int) -> list[dict]:
    """Three generated clips (5 s WAVs) and a PNG of their log-mel spectrograms beside real ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    examples = []
    k = min(3, len(chosen))
    fig, axes = plt.subplots(2, k, figsize=(4.2 * k, 6), squeeze=False)
    for j in range(k):
        clip = val.clips[chosen[j]]
        wav = out / f"generated_{j + 1}.wav"
        sf.write(str(wav), generated[j][: 5 * sr], sr, subtype="PCM_16")
        examples.append({"wav": wav.name, "caption": clip.caption})
        for row, (audio, title) in enumerate(
            ((val.audio[chosen[j]].numpy(), f"real: {clip.caption}"), (generated[j], "generated from that caption"))
        ):
            mel = log_mel(torch.from_numpy(np.ascontiguousarray(audio[: 10 * sr]))[None], sr)[0].T
            ax = axes[row][j]
            ax.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-11, vmax=float(mel.max()))
            ax.set_title(title if len(title) < 60 else title[:57] + "...", fontsize=7)
            ax.set_xlabel("frame (10.7 ms)")
            ax.set_ylabel("mel band")
    fig.tight_layout()
    fig.savefig(out / "spectrograms.png", dpi=90)
    plt.close(fig)
    return examples


def plot_training_curves(run: Path, out: Path) -> Path:
    """One panel per trained network: training and validation losses against steps (from log.csv)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .loop import read_log

    panels = (("vae", ("mrstft", "log_mel_l1")), ("dpd", ("loss", "mean")), ("lm", ("ce",)))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (name, metrics) in zip(axes, panels, strict=True):
        rows = read_log(Path(run) / name)
        for split, style in (("train", "-"), ("validation", "o--")):
            for metric in metrics:
                pts = [(r["step"], r["value"]) for r in rows if r["split"] == split and r["metric"] == metric]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, label=f"{split} {metric}", markersize=4)
        ax.set_title(name)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out) / "training_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
