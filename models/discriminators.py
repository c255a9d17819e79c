"""VAE-GAN discriminators: HiFi-GAN's multi-period (MPD) and UnivNet's multi-resolution spectrogram (MRD).

Training-only (never exported), so weight normalisation is used as in both papers; it can be switched
off in :class:`DiscriminatorConfig`. Every discriminator returns raw logits (least-squares GAN, no
sigmoid) and the feature maps used by the feature-matching loss.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from .config import ConfigBase, require

Logits = list[Tensor]
FeatureMaps = list[list[Tensor]]


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig(ConfigBase):
    """``width`` scales every channel count: 32 gives HiFi-GAN's MPD (32 .. 1024) and UnivNet's MRD (32)."""

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    # (n_fft, hop, win) per resolution, UnivNet's defaults.
    resolutions: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
    width: int = 32
    use_weight_norm: bool = True
    lrelu_slope: float = 0.1

    def validate(self) -> None:
        require(
            len(self.periods) > 0 or len(self.resolutions) > 0,
            "periods",
            "periods and resolutions are both empty; give at least one discriminator",
        )
        for i, p in enumerate(self.periods):
            require(isinstance(p, int) and p >= 1, f"periods[{i}]", f"{p!r} must be an integer >= 1")
        for i, res in enumerate(self.resolutions):
            require(len(res) == 3, f"resolutions[{i}]", f"{res!r} must be (n_fft, hop, win)")
            n_fft, hop, win = res
            require(
                n_fft > 0 and hop > 0 and 0 < win <= n_fft,
                f"resolutions[{i}]",
                f"{res!r} needs n_fft > 0, hop > 0 and 0 < win <= n_fft",
            )
        require(isinstance(self.width, int) and self.width > 0, "width", "must be a positive integer")
        require(0 <= self.lrelu_slope < 1, "lrelu_slope", "must be in [0, 1)")


def _norm(module: nn.Module, enabled: bool) -> nn.Module:
    return weight_norm(module) if enabled else module


class PeriodDiscriminator(nn.Module):
    """audio [B, N] folded to [B, 1, N / p, p]; 2-D convs along time, one column per phase."""

    def __init__(self, period: int, width: int, use_weight_norm: bool, slope: float) -> None:
        super().__init__()
        self.period, self.slope = period, slope
        chans = (1, width, 4 * width, 16 * width, 32 * width, 32 * width)
        strides = (3, 3, 3, 3, 1)
        self.convs = nn.ModuleList(
            _norm(nn.Conv2d(cin, cout, (5, 1), (s, 1), padding=(2, 0)), use_weight_norm)
            for cin, cout, s in zip(chans[:-1], chans[1:], strides)
        )
        self.conv_post = _norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)), use_weight_norm)

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        """audio [B, N] -> (logits [B, K], feature maps)."""
        b, n = audio.shape
        pad = (-n) % self.period
        x = F.pad(audio.unsqueeze(1), (0, pad), mode="reflect") if pad else audio.unsqueeze(1)
        x = x.view(b, 1, (n + pad) // self.period, self.period)
        fmaps = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            fmaps.append(x)
        x = self.conv_post(x)
        fmaps.append(x)
        return x.flatten(1), fmaps


class ResolutionDiscriminator(nn.Module):
    """Linear magnitude spectrogram [B, 1, freq, frames]; 2-D convs striding along time (UnivNet)."""

    def __init__(self, resolution: tuple[int, int, int], width: int, use_weight_norm: bool, slope: float) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win = resolution
        self.slope = slope
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        w = width
        layers = [
            nn.Conv2d(1, w, (3, 9), padding=(1, 4)),
            nn.Conv2d(w, w, (3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(w, w, (3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(w, w, (3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(w, w, (3, 3), padding=(1, 1)),
        ]
        self.convs = nn.ModuleList(_norm(layer, use_weight_norm) for layer in layers)
        self.conv_post = _norm(nn.Conv2d(w, 1, (3, 3), padding=(1, 1)), use_weight_norm)

    def spectrogram(self, audio: Tensor) -> Tensor:
        """audio [B, N] -> magnitude [B, n_fft / 2 + 1, frames]."""
        pad = (self.n_fft - self.hop) // 2
        if audio.shape[-1] <= pad:
            raise ValueError(
                f"audio of {audio.shape[-1]} samples is too short for the {self.n_fft}-point resolution "
                f"discriminator (needs more than {pad}); train on longer segments"
            )
        x = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            x, self.n_fft, self.hop, self.win, window=self.window.to(x.dtype), center=False, return_complex=True
        )
        # The clamp keeps the gradient of the square root finite on silent bins.
        return (spec.real.square() + spec.imag.square()).clamp_min(1e-9).sqrt()

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        """audio [B, N] -> (logits [B, K], feature maps)."""
        x = self.spectrogram(audio).unsqueeze(1)
        fmaps = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            fmaps.append(x)
        x = self.conv_post(x)
        fmaps.append(x)
        return x.flatten(1), fmaps


class _Ensemble(nn.Module):
    discriminators: nn.ModuleList

    def forward(self, audio: Tensor) -> tuple[Logits, FeatureMaps]:
        """audio [B, N] -> (one logits tensor per discriminator, one feature-map list per discriminator)."""
        logits, fmaps = [], []
        for d in self.discriminators:
            lg, fm = d(audio)
            logits.append(lg)
            fmaps.append(fm)
        return logits, fmaps


class MultiPeriodDiscriminator(_Ensemble):
    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        c = config
        self.discriminators = nn.ModuleList(
            PeriodDiscriminator(p, c.width, c.use_weight_norm, c.lrelu_slope) for p in c.periods
        )


class MultiResolutionDiscriminator(_Ensemble):
    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        c = config
        self.discriminators = nn.ModuleList(
            ResolutionDiscriminator(r, c.width, c.use_weight_norm, c.lrelu_slope) for r in c.resolutions
        )


class VAEGANDiscriminator(nn.Module):
    """MPD and MRD together; outputs are concatenated (MPD first)."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.mpd = MultiPeriodDiscriminator(config)
        self.mrd = MultiResolutionDiscriminator(config)

    def forward(self, audio: Tensor) -> tuple[Logits, FeatureMaps]:
        """audio [B, N] -> (logits per discriminator, feature maps per discriminator)."""
        logits_p, fmaps_p = self.mpd(audio)
        logits_r, fmaps_r = self.mrd(audio)
        return logits_p + logits_r, fmaps_p + fmaps_r
