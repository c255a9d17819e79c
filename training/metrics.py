"""Held-out figures for the model card: VAE mel distances, LM baselines, DPD loss per angle, key estimation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from melody_edge.models.semantic_tokenizer import chroma_map, mel_filterbank
from melody_edge.models.vae_losses import moving_average

MEL_RESOLUTIONS = ((2048, 512, 128), (1024, 256, 80), (512, 128, 64))  # (n_fft, hop, n_mels)


def log_mel(audio: Tensor, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> Tensor:
    """audio [B, N] -> log-mel power [B, frames, n_mels] (natural log, floor 1e-5)."""
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(audio, n_fft, hop_length=hop, window=window, return_complex=True).abs().pow(2)
    fb = mel_filterbank(n_fft, n_mels, sample_rate, 0.0, sample_rate / 2).to(audio.device)
    return torch.log(torch.einsum("bfn,fm->bnm", spec, fb) + 1e-5)


def multires_log_mel_distance(ref: Tensor, est: Tensor, sample_rate: int) -> float:
    """Mean L1 distance between log-mel spectrograms at three resolutions (lower is better)."""
    return float(
        sum(
            (log_mel(ref, sample_rate, n, h, m) - log_mel(est, sample_rate, n, h, m)).abs().mean()
            for n, h, m in MEL_RESOLUTIONS
        )
        / len(MEL_RESOLUTIONS)
    )


def mel_snr_db(ref: Tensor, est: Tensor, sample_rate: int) -> float:
    """SNR of the mel magnitude spectrogram (1024-point STFT, hop 256, 80 bands):
    10 log10(sum ref^2 / sum (ref - est)^2) over bands and frames. Phase-blind, like the ear."""
    r = (0.5 * log_mel(ref, sample_rate)).exp()
    e = (0.5 * log_mel(est, sample_rate)).exp()
    return float(10 * torch.log10(r.pow(2).sum() / (r - e).pow(2).sum().clamp_min(1e-20)))


def unigram_cross_entropy(train_tokens: Tensor, val_tokens: Tensor, vocab: int) -> float:
    """Cross-entropy (nats) of validation tokens under the add-one unigram of the training tokens."""
    counts = torch.bincount(train_tokens.reshape(-1), minlength=vocab).double() + 1
    logp = torch.log(counts / counts.sum())
    return float(-logp[val_tokens.reshape(-1)].mean())


@torch.no_grad()
def dpd_loss_by_angle(model, z0: Tensor, tokens: Tensor, bins: int = 4, seed: int = 0) -> dict[str, float]:
    """Velocity MSE with every chunk's angle drawn inside each of ``bins`` equal ranges of [0, pi/2].

    z0: [B, C, L] clean validation latents; tokens: [B, S] (conditional, no dropout).
    Returns {"angle_0.00-0.39": mse, ...} plus "mean".
    """
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    width = (math.pi / 2) / bins
    for i in range(bins):
        delta = (i + torch.rand(z0.shape[0], c.chunks, generator=gen)) * width
        z, angles, target, _ = _noised(z0, delta, c.chunk_frames, gen)
        out[f"angle_{i * width:.2f}-{(i + 1) * width:.2f}"] = float((model(z, angles, tokens) - target).pow(2).mean())
    out["mean"] = sum(out.values()) / bins
    return out


def _noised(z0: Tensor, delta: Tensor, chunk_frames: int, gen: torch.Generator):
    """Per-chunk angles [B, M] -> (z_delta, per-frame angles, velocity target, cos^2 of the angle [B, 1, L])."""
    angles = delta.repeat_interleave(chunk_frames, dim=1).to(z0.device)
    noise = torch.randn(z0.shape, generator=gen).to(z0.device)
    cos, sin = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    return cos * z0 + sin * noise, angles, cos * noise - sin * z0, cos**2


def dpd_fast_slow_error(
    model, z0: Tensor, tokens: Tensor, angles: tuple[float, ...] = (0.2, 0.5, 0.8, 1.1, 1.4), seed: int = 0
) -> dict[str, dict[str, float]]:
    """How well the DPD recovers the fast (< 5-frame) and the slow structure of the clean latent, per angle.

    At each angle (every frame), the clean estimate ``cos d * z - sin d * v`` is compared with z0; its
    error is split by a 5-frame moving average into a fast and a slow part, and each part's energy is
    divided by that of the same part of z0 (time mean removed from the slow part). 1.0 means the DPD
    recovers none of that part; the demo VAE keeps pitch in the fast part (docs/model_card.md).
    z0: [B, C, L] clean validation latents; tokens: [B, S]. Returns {"angle_0.20": {"fast": .., "slow": ..}}.
    """
    gen = torch.Generator().manual_seed(seed)
    edge = 4  # the moving average's padded ends

    def split(x: Tensor) -> tuple[Tensor, Tensor]:
        slow = moving_average(x)
        return (x - slow)[..., edge:-edge], slow[..., edge:-edge]

    fast0, slow0 = split(z0)
    slow0 = slow0 - slow0.mean(-1, keepdim=True)
    out: dict[str, dict[str, float]] = {}
    for a in angles:
        delta = torch.full((z0.shape[0], model.config.chunks), float(a))
        z, frame_angles, _, _ = _noised(z0, delta, model.config.chunk_frames, gen)
        x0 = math.cos(a) * z - math.sin(a) * model(z, frame_angles, tokens)
        fast_e, slow_e = split(x0 - z0)
        out[f"angle_{a:.2f}"] = {
            "fast": float(fast_e.square().sum() / fast0.square().sum()),
            "slow": float(slow_e.square().sum() / slow0.square().sum()),
        }
    return out


def dpd_token_use(model, z0: Tensor, tokens: Tensor, seed: int = 0, low: float = 1.18) -> dict[str, float]:
    """How much the semantic tokens help the DPD near pure noise, where only they can tell it the latent.

    Every chunk's angle is drawn in [low, pi/2]. Reports the velocity MSE with the real tokens, with
    null tokens, and with another window's tokens, each divided by the MSE of the best estimate that
    knows only the latents' variance s2 (s2 / (s2 cos^2 d + sin^2 d) at angle d), so 1.0 means the
    network adds nothing to that and the figures compare across latent scales.
    """
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    delta = low + torch.rand(z0.shape[0], c.chunks, generator=gen) * (math.pi / 2 - low)
    z, angles, target, cos2 = _noised(z0, delta, c.chunk_frames, gen)
    s2 = float(z0.var())
    baseline = float((s2 / (s2 * cos2 + 1 - cos2)).mean())
    out = {"angle_low": low, "latent_variance": s2, "gaussian_baseline_mse": baseline}
    for name, tok in (
        ("real_tokens", tokens),
        ("null_tokens", torch.full_like(tokens, c.null_token)),
        ("other_windows_tokens", tokens.roll(1, 0)),
    ):
        out[f"{name}_relative_mse"] = float((model(z, angles, tok) - target).pow(2).mean()) / baseline
    return out


# Krumhansl-Kessler key profiles (major, minor), tonic first.
_MAJOR = torch.tensor([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = torch.tensor([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def chroma_frames(audio: Tensor, sample_rate: int, n_fft: int = 4096, hop: int = 1024) -> Tensor:
    """audio [N] -> per-frame chroma energy [N // hop + 1, 12] (C first), 55 Hz to 2 kHz of the magnitude spectrum;
    audio [B, N] -> [B, N // hop + 1, 12]. Differentiable (the DPD's chroma loss trains through it)."""
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    batch = audio if audio.dim() == 2 else audio[None]
    mag = torch.stft(batch, n_fft, hop_length=hop, window=window, return_complex=True).abs()  # [B, F, T]
    # The tokenizer's chroma block folds bins the same way.
    frames = mag.pow(2).transpose(1, 2) @ chroma_map(n_fft, sample_rate).to(audio)
    return frames if audio.dim() == 2 else frames[0]


def chroma(audio: Tensor, sample_rate: int, n_fft: int = 4096, hop: int = 1024) -> Tensor:
    """audio [N] -> mean chroma [12] (C first) from the magnitude spectrum between 55 Hz and 2 kHz."""
    return chroma_frames(audio, sample_rate, n_fft, hop).mean(0)


def key_from_chroma(c: Tensor) -> tuple[int, str]:
    """Krumhansl-Schmuckler: mean chroma [12] -> (tonic pitch class, "major" | "minor")."""
    c = (c - c.mean()) / c.std().clamp_min(1e-12)
    best, best_r = (0, "major"), -math.inf
    for mode, prof in (("major", _MAJOR), ("minor", _MINOR)):
        p = (prof - prof.mean()) / prof.std()
        for tonic in range(12):
            r = float((c * torch.roll(p, tonic)).mean())
            if r > best_r:
                best, best_r = (tonic, mode), r
    return best


def estimate_key(audio: Tensor, sample_rate: int) -> tuple[int, str]:
    """Krumhansl-Schmuckler key estimate of mono audio [N] -> (tonic pitch class, "major" | "minor")."""
    return key_from_chroma(chroma(audio, sample_rate))


def token_chroma_table(audio: list[Tensor], tokens: list[Tensor], vocab: int, sample_rate: int, hop: int) -> Tensor:
    """Mean chroma energy of each semantic token over the clips it occurs in: [vocab, 12] (zeros if unseen).

    ``hop`` is the token hop in samples; chroma frame i is centred on the start of token i.
    """
    sums, counts = torch.zeros(vocab, 12), torch.zeros(vocab)
    for a, t in zip(audio, tokens, strict=True):
        frames = chroma_frames(a, sample_rate, hop=hop)
        n = min(frames.shape[0], t.numel())
        sums.index_add_(0, t[:n], frames[:n])
        counts.index_add_(0, t[:n], torch.ones(n))
    return sums / counts.clamp_min(1)[:, None]


def key_from_tokens(tokens: Tensor, table: Tensor) -> tuple[int, str]:
    """The key a token sequence [T] implies: the profile estimate of its tokens' mean chroma (``table``).

    This reads the key from the tokens alone, with no DPD or VAE: how much of the key the tokenizer keeps,
    a reference for what a DPD that renders the tokens could pass on.
    """
    return key_from_chroma(table[tokens].mean(0))


def onset_envelope(audio: Tensor, sample_rate: int, hop: int = 256) -> Tensor:
    """audio [N] -> onset strength [frames]: half-wave rectified log-mel flux, mean over 64 bands."""
    mel = log_mel(audio[None], sample_rate, n_fft=1024, hop=hop, n_mels=64)[0]  # [T, 64]
    flux = (mel[1:] - mel[:-1]).clamp_min(0).mean(1)
    return flux - flux.mean()


def estimate_tempo(audio: Tensor, sample_rate: int, lo_bpm: float = 50.0, hi_bpm: float = 220.0) -> float:
    """Beats per minute of mono audio [N]: the autocorrelation peak of the onset envelope, weighted by a
    log-normal prior around 120 bpm (one octave wide) so that a beat is preferred to a bar or a tatum."""
    hop = 256
    env = onset_envelope(audio, sample_rate, hop)
    n = env.numel()
    spec = torch.fft.rfft(env, 2 * n)
    acf = torch.fft.irfft(spec * spec.conj(), 2 * n)[:n]
    acf = acf / acf[0].clamp_min(1e-12)
    frame_rate = sample_rate / hop
    lags = torch.arange(n, dtype=torch.float64)
    bpm = 60.0 * frame_rate / lags.clamp_min(1)
    keep = (bpm >= lo_bpm) & (bpm <= hi_bpm)
    prior = torch.exp(-0.5 * torch.log2(bpm / 120.0) ** 2)
    score = torch.where(keep, acf.double().clamp_min(0) * prior, torch.full_like(bpm, -1.0))
    k = int(score.argmax())
    if 0 < k < n - 1:  # parabolic interpolation of the peak, for sub-frame lag precision
        a, b, c = (float(acf[k - 1]), float(acf[k]), float(acf[k + 1]))
        denom = a - 2 * b + c
        if denom < 0:
            return 60.0 * frame_rate / (k + 0.5 * (a - c) / denom)
    return float(bpm[k])


def tempo_ok(estimate: float, truth: float, tolerance: float = 0.08) -> tuple[bool, bool]:
    """(within ``tolerance`` of the truth, within it up to a factor of 2 or 3: MIREX's accuracy 1 and 2)."""
    close = [abs(estimate / (truth * f) - 1) <= tolerance for f in (1, 2, 0.5, 3, 1 / 3)]
    return close[0], any(close)
