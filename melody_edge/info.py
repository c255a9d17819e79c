"""``melody-edge info``: parameters, FLOPs per forward and network passes against MusicLM."""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from melody_edge.models.dpd import DualPathDiffusion
from melody_edge.models.lm import SemanticLM
from melody_edge.models.melody import MelodyConfig
from melody_edge.models.vae import VAE

# MusicLM per second of audio: 25 semantic + 50 Hz x 4 coarse + 50 Hz x 8 fine autoregressive passes.
MUSICLM_PASSES_PER_SECOND = 25 + 200 + 400
DURATIONS = (10, 30)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def network_passes(config: MelodyConfig, seconds: float, steps: int | None = None) -> dict[str, int]:
    """Forward passes of the streaming schedule (runtime/pipeline.py) for ``seconds`` of audio.

    Every network call counts once; guidance's two passes are one batched call. LM: one decode per
    semantic token plus one prefill at the start and one per window slide.
    """
    steps = config.steps if steps is None else steps
    chunk_s = config.chunk_seconds
    chunks = max(1, math.ceil(seconds / chunk_s - 1e-9))
    tokens = round(seconds * config.token_rate)
    slides = max(0, chunks - config.dpd.chunks)
    lm = tokens + 1 + slides
    dpd = steps * chunks
    vae = chunks + 1
    return {"lm": lm, "dpd": dpd, "vae": vae, "total": lm + dpd + vae}


def model_info(config: MelodyConfig) -> dict:
    """Parameters per component, FLOPs per forward, passes for 10 s and 30 s against MusicLM."""
    with torch.device("meta"):
        lm = SemanticLM(config.lm)
        dpd = DualPathDiffusion(config.dpd)
        vae = VAE(config.vae)
    params = {
        "lm": sum(p.numel() for p in lm.parameters()),
        "dpd": sum(p.numel() for p in dpd.parameters()),
        "vae_encoder": sum(p.numel() for p in vae.encoder.parameters()),
        "vae_decoder": sum(p.numel() for p in vae.decoder.parameters()),
    }
    params["total"] = sum(params.values())
    d = config.dpd
    r = vae.context_frames
    with torch.device("meta"):
        window = torch.zeros(2, d.latent_channels, d.window_frames)
        angles = torch.zeros(2, d.window_frames)
        tokens = torch.zeros(2, d.window_tokens, dtype=torch.long)
        vae_in = torch.zeros(1, d.latent_channels, d.chunk_frames + 2 * r)
        one = torch.zeros(1, 1, dtype=torch.long)
        prefix = torch.zeros(1, config.lm.prefix_levels, dtype=torch.long)
    flops = {
        "lm_decode_step": count_flops(lambda: lm.decode(one, config.lm.max_seq_len - 1)),
        "lm_prefill_prefix": count_flops(lambda: lm.prefill(prefix, 0)),
        "dpd_window_guided": count_flops(lambda: dpd(window, angles, tokens)),
        "vae_decode_chunk": count_flops(lambda: vae.decode_chunk(vae_in)),
    }
    nfe, musiclm, detail, reduction = {}, {}, {}, {}
    for s in DURATIONS:
        passes = network_passes(config, s)
        detail[str(s)] = passes
        nfe[str(s)] = passes["total"]
        musiclm[str(s)] = MUSICLM_PASSES_PER_SECOND * s
        reduction[str(s)] = round(100.0 * (1 - passes["total"] / musiclm[str(s)]), 2)
    per_second = _flops_per_audio_second(config, flops)
    return {
        "config": config.name,
        "params": params,
        "flops_per_forward": flops,
        "flops_per_audio_second": per_second,
        "nfe": nfe,
        "nfe_detail": detail,
        "musiclm_nfe": musiclm,
        "nfe_reduction_percent": reduction,
        "nfe_counting": (
            "every network forward pass of the streaming schedule (LM decode per token + prefills, "
            "DPD steps x chunks with guidance batched, VAE chunks + flush) against MusicLM's "
            "25 semantic + 200 coarse + 400 fine autoregressive passes per second"
        ),
        "sampler_steps": config.steps,
        "sample_rate": config.sample_rate,
        "latent_rate": config.latent_rate,
        "token_rate": config.token_rate,
        "window_seconds": config.window_seconds,
        "chunk_seconds": config.chunk_seconds,
        "vae_context_frames": r,
    }


def _flops_per_audio_second(config: MelodyConfig, flops: dict[str, int]) -> dict[str, float]:
    chunk_s = config.chunk_seconds
    lm = flops["lm_decode_step"] * config.token_rate
    dpd = flops["dpd_window_guided"] * config.steps / chunk_s
    vae = flops["vae_decode_chunk"] / chunk_s
    return {"lm": lm, "dpd": dpd, "vae": vae, "total": lm + dpd + vae}


def format_info(info: dict) -> str:
    lines = [f"config: {info['config']}", "", "parameters:"]
    for k, v in info["params"].items():
        lines.append(f"  {k:<14} {v / 1e6:10.2f} M")
    lines += ["", "FLOPs per forward:"]
    for k, v in info["flops_per_forward"].items():
        lines.append(f"  {k:<20} {v / 1e9:10.3f} GFLOP")
    lines += ["", f"FLOPs per second of audio (T = {info['sampler_steps']} steps):"]
    for k, v in info["flops_per_audio_second"].items():
        lines.append(f"  {k:<6} {v / 1e9:10.2f} GFLOP/s")
    lines += ["", "network forward passes (MeLoDy streaming vs MusicLM):"]
    for s in info["nfe"]:
        d = info["nfe_detail"][s]
        lines.append(
            f"  {s:>3} s: {info['nfe'][s]:6d} (LM {d['lm']}, DPD {d['dpd']}, VAE {d['vae']}) vs "
            f"{info['musiclm_nfe'][s]:6d}  -> {info['nfe_reduction_percent'][s]:.1f} % fewer"
        )
    lines.append(f"  counting: {info['nfe_counting']}")
    return "\n".join(lines)
