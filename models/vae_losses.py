"""VAE-GAN training losses with the paper's weights.

generator:     50 * MR-STFT + 20 * feature matching + 1 * least-squares GAN + 0.005 * KL
discriminator: least-squares GAN

Normalisation (the paper gives weights, not reductions): the MR-STFT loss averages its resolutions,
feature matching averages every (discriminator, layer) L1, the adversarial terms average the
discriminators, and the KL is summed over latent channels and averaged over batch and frames. So no
weight depends on how many discriminators, layers or resolutions are used.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ConfigBase, require

# (n_fft, hop, win): n_fft 8192 .. 32, window n_fft / 2, hop n_fft / 4.
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = tuple(
    (n, n // 4, n // 2) for n in (8192, 4096, 2048, 1024, 512, 128, 32)
)
# Floor of the power spectrum: keeps sqrt and log finite (and differentiable) on silent bins.
POWER_FLOOR = 1e-7


@dataclasses.dataclass(frozen=True)
class VAELossWeights(ConfigBase):
    mrstft: float = 50.0
    feature_matching: float = 20.0
    adversarial: float = 1.0
    kl: float = 0.005

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            require(math.isfinite(v) and v >= 0, f.name, f"{v!r} must be a finite number >= 0")


def stft_magnitude(audio: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    """audio [B, N] -> magnitude [B, n_fft / 2 + 1, frames] (centred frames, reflect padding, Hann window)."""
    window = torch.hann_window(win, dtype=audio.dtype, device=audio.device)
    spec = torch.stft(audio, n_fft, hop, win, window=window, center=True, pad_mode="reflect", return_complex=True)
    return (spec.real.square() + spec.imag.square()).clamp_min(POWER_FLOOR).sqrt()


def usable_resolutions(
    length: int, resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS
) -> tuple[tuple[int, int, int], ...]:
    """Resolutions that fit audio of ``length`` samples.

    Rule: a resolution is used only if n_fft / 2 < length. Centring pads n_fft / 2 samples each side
    by reflection, which needs that many real samples; and here n_fft / 2 is the window length, so a
    skipped resolution would have windowed mostly padding anyway. (Segments of 4097+ samples use all 7.)
    """
    return tuple(r for r in resolutions if r[0] // 2 < length)


def multi_resolution_stft_loss(
    fake: Tensor, real: Tensor, resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS
) -> Tensor:
    """Mean over usable resolutions of spectral convergence + log-magnitude L1. fake, real: [B, N] -> scalar."""
    if fake.shape != real.shape:
        raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} audio differ in shape")
    used = usable_resolutions(real.shape[-1], resolutions)
    if not used:
        smallest = min(r[0] // 2 for r in resolutions)
        raise ValueError(f"audio of {real.shape[-1]} samples is shorter than every STFT resolution (> {smallest})")
    total = fake.new_zeros(())
    for n_fft, hop, win in used:
        fake_mag = stft_magnitude(fake, n_fft, hop, win)
        real_mag = stft_magnitude(real, n_fft, hop, win)
        convergence = torch.linalg.vector_norm(real_mag - fake_mag) / torch.linalg.vector_norm(real_mag)
        log_mag = F.l1_loss(fake_mag.log(), real_mag.log())
        total = total + convergence + log_mag
    return total / len(used)


def feature_matching_loss(real_fmaps: list[list[Tensor]], fake_fmaps: list[list[Tensor]]) -> Tensor:
    """Mean over every (discriminator, layer) of the L1 between feature maps; real maps are targets (detached)."""
    terms = [F.l1_loss(f, r.detach()) for rs, fs in zip(real_fmaps, fake_fmaps, strict=True) for r, f in zip(rs, fs)]
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake_logits: list[Tensor]) -> Tensor:
    """Least squares: mean over discriminators of mean((1 - D(fake))^2)."""
    return torch.stack([(1 - d).square().mean() for d in fake_logits]).mean()


def discriminator_adversarial_loss(real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
    """Least squares: mean over discriminators of mean((1 - D(real))^2) + mean(D(fake)^2)."""
    terms = [(1 - r).square().mean() + f.square().mean() for r, f in zip(real_logits, fake_logits, strict=True)]
    return torch.stack(terms).mean()


def kl_loss(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) for [B, C, F] posteriors: summed over C, averaged over B and F."""
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
    return kl.sum(dim=1).mean()


def moving_average(z: Tensor, width: int = 5) -> Tensor:
    """[B, C, F] -> the same shape, each value the mean of ``width`` frames around it (zeros past the ends)."""
    b, c, f = z.shape
    kernel = torch.full((1, 1, width), 1.0 / width, dtype=z.dtype, device=z.device)
    return torch.nn.functional.conv1d(z.reshape(b * c, 1, f), kernel, padding=width // 2)[..., :f].reshape(b, c, f)


def latent_fast_share(mean: Tensor, width: int = 5) -> Tensor:
    """Share of a latent's (time-mean-removed) energy in structure faster than ``width`` frames.

    mean: [B, C, F] posterior means -> scalar in [0, ~1]: the energy of ``mean`` minus its ``width``-frame
    moving average over the energy of ``mean`` minus its time mean, both away from the padded ends.
    A per-token signal (the DPD's semantic tokens, 10 frames each) cannot carry this part; VAE training
    logs it (docs/model_card.md).
    """
    if width < 2 or mean.shape[-1] <= 2 * (width - 1):
        raise ValueError(f"latent_fast_share needs width >= 2 and more than {2 * (width - 1)} frames, got {mean.shape}")
    edge = width - 1
    fast = (mean - moving_average(mean, width))[..., edge:-edge]
    centred = (mean - mean.mean(-1, keepdim=True))[..., edge:-edge]
    return fast.square().sum() / centred.square().sum().clamp_min(1e-12)


def reconstruction_loss(
    real: Tensor, fake: Tensor, mean: Tensor, logvar: Tensor, weights: VAELossWeights | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The non-adversarial part (also the warm-up loss before the discriminators start).

    real, fake: [B, N]; mean, logvar: [B, C, F] -> (mrstft * MR-STFT + kl * KL, parts).
    """
    w = weights or VAELossWeights()
    parts = {"mrstft": multi_resolution_stft_loss(fake, real), "kl": kl_loss(mean, logvar)}
    total = w.mrstft * parts["mrstft"] + w.kl * parts["kl"]
    return total, {**parts, "total": total}


def generator_loss(
    real: Tensor,
    fake: Tensor,
    mean: Tensor,
    logvar: Tensor,
    fake_logits: list[Tensor],
    real_fmaps: list[list[Tensor]],
    fake_fmaps: list[list[Tensor]],
    weights: VAELossWeights | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Full VAE (generator) loss: 50 * MR-STFT + 20 * FM + 1 * LS-GAN + 0.005 * KL.

    real, fake: [B, N] audio; mean, logvar: [B, C, F]; logits and feature maps from the discriminators
    run on ``fake`` (with gradient) and on ``real``. Returns (total, parts incl. "total").
    """
    w = weights or VAELossWeights()
    _, parts = reconstruction_loss(real, fake, mean, logvar, w)
    parts["fm"] = feature_matching_loss(real_fmaps, fake_fmaps)
    parts["adv"] = generator_adversarial_loss(fake_logits)
    total = w.mrstft * parts["mrstft"] + w.feature_matching * parts["fm"] + w.adversarial * parts["adv"]
    total = total + w.kl * parts["kl"]
    parts["total"] = total
    return total, parts


def discriminator_loss(real_logits: list[Tensor], fake_logits: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Discriminator loss from logits on real audio and on detached generated audio -> (total, parts)."""
    total = discriminator_adversarial_loss(real_logits, fake_logits)
    return total, {"adv": total, "total": total}
