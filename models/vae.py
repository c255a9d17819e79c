"""VAE-GAN autoencoder: 24 kHz mono audio <-> 250 Hz x 16 latents in [-1, 1].

Encoder and decoder are HiFi-GAN-style convolution stacks (multi-receptive-field residual blocks
between strided down-/up-sampling convolutions). Every layer is a plain ``Conv1d`` /
``ConvTranspose1d`` (no weight-norm parametrizations) so the decoder exports with ``torch.export``
at a static shape.

Chunked decoding is exact. The decoder's receptive field reaches R = ``context_frames`` latent
frames on each side (computed from the layer shapes, not measured). Whole decoding is defined as
"zero-pad R frames each side, run the network, crop"; a static window of R + C + R frames sliced from
that padded latent therefore yields exactly the audio of its C middle frames.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigBase, require

# Kernel of the convolutions that enter and leave each stack (HiFi-GAN's conv_pre / conv_post).
IO_KERNEL = 7
# Keeps exp(logvar) finite early in training; the posterior never needs variances outside it.
LOGVAR_RANGE = (-30.0, 20.0)


@dataclasses.dataclass(frozen=True)
class VAEConfig(ConfigBase):
    sample_rate: int = 24000
    latent_channels: int = 16
    latent_scale: float = 3.0
    # DPD works on gain * clip(z / latent_scale, -1, 1): the paper's clip bounds the latent, the gain
    # brings its spread near the unit variance of the diffusion noise (see docs/architecture.md).
    latent_gain: float = 1.0
    enc_channels: tuple[int, ...] = (32, 64, 128, 256)
    enc_rates: tuple[int, ...] = (2, 3, 4, 4)
    enc_kernels: tuple[int, ...] = (5, 7, 9, 9)
    enc_res_kernels: tuple[int, ...] = (3, 7)
    enc_res_dilations: tuple[int, ...] = (1, 3)
    dec_channels: tuple[int, ...] = (256, 128, 64, 32)
    dec_rates: tuple[int, ...] = (4, 4, 3, 2)
    dec_kernels: tuple[int, ...] = (9, 9, 5, 7)
    dec_res_kernels: tuple[int, ...] = (3, 7)
    dec_res_dilations: tuple[int, ...] = (1, 3)
    lrelu_slope: float = 0.1
    # Width in frames of a fixed Hann low-pass on the posterior mean (0: none). Meant to make the latent
    # carry pitch in values a per-token signal can predict; at 9 frames the decoder still kept pitch in
    # structure finer than one token (docs/model_card.md), so no preset uses it.
    latent_smoothing: int = 0

    def validate(self) -> None:
        for name in ("sample_rate", "latent_channels"):
            require(_is_pos_int(getattr(self, name)), name, "must be a positive integer")
        require(
            math.isfinite(self.latent_scale) and self.latent_scale > 0,
            "latent_scale",
            "must be a positive number (latent = clip(z / latent_scale, -1, 1))",
        )
        require(
            math.isfinite(self.latent_gain) and self.latent_gain > 0,
            "latent_gain",
            "must be a positive number (latent = latent_gain * clip(z / latent_scale, -1, 1))",
        )
        require(0 <= self.lrelu_slope < 1, "lrelu_slope", "must be in [0, 1)")
        require(
            isinstance(self.latent_smoothing, int)
            and (self.latent_smoothing == 0 or (self.latent_smoothing >= 3 and self.latent_smoothing % 2 == 1)),
            "latent_smoothing",
            f"{self.latent_smoothing!r} must be 0 (off) or an odd number of frames >= 3",
        )
        for side in ("enc", "dec"):
            channels, rates, kernels = (getattr(self, f"{side}_{f}") for f in ("channels", "rates", "kernels"))
            for name, values in ((f"{side}_channels", channels), (f"{side}_rates", rates)):
                require(len(values) > 0, name, "needs at least one stage")
                for i, v in enumerate(values):
                    require(_is_pos_int(v), f"{name}[{i}]", f"{v!r} must be a positive integer")
            for name in (f"{side}_rates", f"{side}_kernels"):
                require(
                    len(getattr(self, name)) == len(channels),
                    name,
                    f"needs one entry per stage ({len(channels)}, as {side}_channels), got {len(getattr(self, name))}",
                )
            for i, (k, u) in enumerate(zip(kernels, rates)):
                require(
                    _is_pos_int(k) and k >= u,
                    f"{side}_kernels[{i}]",
                    f"{k!r} must be an integer >= the stage's rate {u} (a shorter kernel skips samples)",
                )
                require(
                    u > 1 or (k - u) % 2 == 0,
                    f"{side}_kernels[{i}]",
                    f"{k} must be odd for a stage of rate 1 (no output padding can realign it)",
                )
            for i, k in enumerate(getattr(self, f"{side}_res_kernels")):
                require(
                    _is_pos_int(k) and k % 2 == 1, f"{side}_res_kernels[{i}]", f"{k!r} must be a positive odd integer"
                )
            for i, d in enumerate(getattr(self, f"{side}_res_dilations")):
                require(_is_pos_int(d), f"{side}_res_dilations[{i}]", f"{d!r} must be a positive integer")
            for name in (f"{side}_res_kernels", f"{side}_res_dilations"):
                require(len(getattr(self, name)) > 0, name, "needs at least one entry")
        require(
            math.prod(self.enc_rates) == math.prod(self.dec_rates),
            "dec_rates",
            f"product {math.prod(self.dec_rates)} must equal the product of enc_rates "
            f"({math.prod(self.enc_rates)}): both are the hop length",
        )
        require(
            self.sample_rate % self.hop_length == 0,
            "sample_rate",
            f"{self.sample_rate} must be a multiple of the hop length {self.hop_length} (integer latent rate)",
        )

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (96 for 2*3*4*4)."""
        return math.prod(self.dec_rates)

    @property
    def latent_rate(self) -> int:
        """Latent frames per second (250 at 24 kHz)."""
        return self.sample_rate // self.hop_length


def _is_pos_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# clip(z / 3) of the demo VAE's posterior means has a standard deviation of 0.33 over its 68
# validation clips (0.14 to 0.69 per clip): times 3 its spread matches the diffusion noise. With
# the gain at 1 the DPD's velocity target is mostly noise and the 5-step sampler's last step (from
# 0.175 rad) starts at a signal-to-noise ratio of 3.5 instead of 32.
GAIN_TO_UNIT_VARIANCE = 3.0

VAE_PRESETS: dict[str, VAEConfig] = {
    # Tests: 0.2 GFLOP per second of audio; decodes 10 s in about 0.1 s on 2 cores.
    "tiny": VAEConfig(
        enc_channels=(8, 16, 16, 32),
        enc_res_kernels=(3,),
        dec_channels=(32, 16, 16, 8),
        dec_res_kernels=(3,),
        latent_gain=GAIN_TO_UNIT_VARIANCE,
    ),
    # On-device: 18 GFLOP per second of audio in the decoder, spread about evenly over the four
    # stages (width halves as the rate grows 4x, 4x, 3x, 2x); the encoder is the mirror image at the
    # spec's listed encoder widths. Two MRF kernels x two dilations keep R at 11 frames.
    "edge": VAEConfig(
        enc_channels=(32, 64, 128, 256),
        enc_res_kernels=(3, 7),
        enc_res_dilations=(1, 3),
        dec_channels=(256, 128, 64, 32),
        dec_res_kernels=(3, 7),
        dec_res_dilations=(1, 3),
        latent_gain=GAIN_TO_UNIT_VARIANCE,
    ),
    # Trained on 2 CPU cores: the edge structure at half the width (a quarter of the FLOPs).
    "demo": VAEConfig(
        enc_channels=(16, 32, 64, 128),
        enc_res_kernels=(3, 7),
        enc_res_dilations=(1, 3),
        dec_channels=(128, 64, 32, 16),
        dec_res_kernels=(3, 7),
        dec_res_dilations=(1, 3),
        latent_gain=GAIN_TO_UNIT_VARIANCE,
    ),
    # The paper's widths, rates and kernels; residual blocks tuned to the published sizes.
    # Decoder: one HiFi-GAN V1 ResBlock of kernel 11, dilations (1, 3, 5) per stage -> 60.26M
    # (+0.3 % of 60.1M; three-kernel MRF stacks land at 56M, 62M or 107M).
    # Encoder: the spec's widths (32, 64, 128, 256) cannot reach the published 40M with this
    # structure (4.5M with the stack below, 12M even with HiFi-GAN V1's full MRF of kernels 3, 7, 11
    # x dilations 1, 3, 5). Rates and kernels are kept; the widths are the decoder's mirrored
    # (96 .. 768, three times the listed ones) with MRF kernels (3, 7) x dilations (1, 3) -> 40.09M
    # (+0.2 %).
    "paper": VAEConfig(
        enc_channels=(96, 192, 384, 768),
        dec_channels=(768, 384, 192, 96),
        dec_res_kernels=(11,),
        dec_res_dilations=(1, 3, 5),
        latent_gain=GAIN_TO_UNIT_VARIANCE,
    ),
}


# ---------------------------------------------------------------------------------------------
# Building blocks


def _conv_in_span(conv: nn.Conv1d | nn.ConvTranspose1d, lo: int, hi: int) -> tuple[int, int]:
    """Input indices that output indices [lo, hi] of ``conv`` read (out-of-range inputs are zeros)."""
    k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    if isinstance(conv, nn.ConvTranspose1d):
        # out[o] sums x[i] * w[j] over i * s + j * d - p == o.
        return -((-(lo + p - d * (k - 1))) // s), (hi + p) // s
    return lo * s - p, hi * s - p + d * (k - 1)


def _union(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return min(a[0], b[0]), max(a[1], b[1])


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation d, x + conv(lrelu(conv_d(lrelu(x)))). [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...], slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations
        )
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, self.slope)), self.slope))
        return x

    def input_span(self, span: tuple[int, int], record: list[tuple[int, int]]) -> tuple[int, int]:
        for c1, c2 in zip(reversed(self.convs1), reversed(self.convs2)):
            mid = _conv_in_span(c2, *span)
            record.append(mid)
            span = _union(span, _conv_in_span(c1, *mid))
            record.append(span)
        return span


class MRF(nn.Module):
    """Multi-receptive-field fusion: the mean of parallel ResBlocks of different kernels. [B, C, T] -> same."""

    def __init__(self, channels: int, kernels: tuple[int, ...], dilations: tuple[int, ...], slope: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, k, dilations, slope) for k in kernels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.blocks[0](x)
        for block in self.blocks[1:]:
            out = out + block(x)
        return out / len(self.blocks)

    def input_span(self, span: tuple[int, int], record: list[tuple[int, int]]) -> tuple[int, int]:
        result = span
        for block in self.blocks:
            result = _union(result, block.input_span(span, record))
        return result


def _mrf_macs_per_sample(channels: int, kernels: tuple[int, ...], dilations: tuple[int, ...]) -> int:
    return sum(2 * len(dilations) * channels * channels * k for k in kernels)


# ---------------------------------------------------------------------------------------------
# Encoder and decoder


class VAEEncoder(nn.Module):
    """audio [B, 1, N] -> mean and log-variance stacked [B, 2 * latent_channels, N / hop].

    conv_in, then per stage: MRF residual blocks at the stage width and a strided convolution to the
    next width (the last stage keeps its width), then conv_out to mean + log-variance.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c = config
        self.slope = c.lrelu_slope
        self.conv_in = nn.Conv1d(1, c.enc_channels[0], IO_KERNEL, padding=IO_KERNEL // 2)
        self.mrfs = nn.ModuleList(MRF(ch, c.enc_res_kernels, c.enc_res_dilations, self.slope) for ch in c.enc_channels)
        outs = (*c.enc_channels[1:], c.enc_channels[-1])
        self.downs = nn.ModuleList(
            nn.Conv1d(cin, cout, k, stride=u, padding=(k - u + 1) // 2)
            for cin, cout, k, u in zip(c.enc_channels, outs, c.enc_kernels, c.enc_rates)
        )
        self.conv_out = nn.Conv1d(outs[-1], 2 * c.latent_channels, IO_KERNEL, padding=IO_KERNEL // 2)

    def forward(self, audio: Tensor) -> Tensor:
        x = self.conv_in(audio)
        for mrf, down in zip(self.mrfs, self.downs):
            x = down(F.leaky_relu(mrf(x), self.slope))
        return self.conv_out(F.leaky_relu(x, self.slope))


class VAEDecoder(nn.Module):
    """latent [B, latent_channels, F] -> audio [B, 1, F * hop] in [-1, 1].

    HiFi-GAN generator: conv_pre to the first width, per stage a transposed convolution up-sampling
    into the stage width and MRF residual blocks, then conv_post to one channel and tanh. No zero
    padding is added here: the caller (``VAE.decode``) owns the context frames.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c = config
        self.slope = c.lrelu_slope
        self.conv_pre = nn.Conv1d(c.latent_channels, c.dec_channels[0], IO_KERNEL, padding=IO_KERNEL // 2)
        ins = (c.dec_channels[0], *c.dec_channels[:-1])
        ups = []
        for cin, cout, k, u in zip(ins, c.dec_channels, c.dec_kernels, c.dec_rates):
            # Output length must be exactly input * u: 2 * padding - output_padding == k - u.
            pad = (k - u + 1) // 2
            ups.append(nn.ConvTranspose1d(cin, cout, k, stride=u, padding=pad, output_padding=2 * pad - (k - u)))
        self.ups = nn.ModuleList(ups)
        self.mrfs = nn.ModuleList(MRF(ch, c.dec_res_kernels, c.dec_res_dilations, self.slope) for ch in c.dec_channels)
        self.conv_post = nn.Conv1d(c.dec_channels[-1], 1, IO_KERNEL, padding=IO_KERNEL // 2)
        self.rates = c.dec_rates

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_pre(z)
        for up, mrf in zip(self.ups, self.mrfs):
            x = mrf(up(F.leaky_relu(x, self.slope)))
        return torch.tanh(self.conv_post(F.leaky_relu(x, self.slope)))

    def dependency_spans(self) -> list[tuple[int, int, int]]:
        """What the audio of latent frame 0 reads, at every intermediate tensor of the stack.

        Returns (lo, hi, samples_per_frame) triples: indices [lo, hi] of a tensor running at
        ``samples_per_frame`` samples per latent frame (1 for the latent itself). Exact index
        arithmetic from kernel, stride, padding and dilation of every convolution.
        """
        per_frame = math.prod(self.rates)
        spans: list[tuple[int, int, int]] = [(0, per_frame - 1, per_frame)]
        span = _conv_in_span(self.conv_post, 0, per_frame - 1)
        spans.append((*span, per_frame))
        for up, mrf in zip(reversed(self.ups), reversed(self.mrfs)):
            inner: list[tuple[int, int]] = []
            span = mrf.input_span(span, inner)
            spans.extend((lo, hi, per_frame) for lo, hi in inner)
            span = _conv_in_span(up, *span)
            per_frame //= up.stride[0]
            spans.append((*span, per_frame))
        span = _conv_in_span(self.conv_pre, *span)
        spans.append((*span, 1))
        return spans

    def context_frames(self) -> int:
        """Smallest R such that a window of R + C + R latent frames yields its C middle frames exactly.

        Every value the middle frames read, at every layer, must lie inside the window; a tensor at m
        samples per frame holds (2R + C) * m of them, and frame 0's span (lo, hi) shifts by m per frame.
        """
        r = 0
        for lo, hi, m in self.dependency_spans():
            r = max(r, -(lo // m), -(-(hi + 1 - m) // m))
        return r


# ---------------------------------------------------------------------------------------------
# The autoencoder


class VAE(nn.Module):
    """Encoder + decoder with latent normalisation and exact chunked decoding."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VAEEncoder(config)
        self.decoder = VAEDecoder(config)
        self._context = self.decoder.context_frames()
        w = config.latent_smoothing
        if w:
            # Hann taps (ends excluded), unit sum: sidelobes far below a box filter's, so no fast
            # structure leaks through. Not persistent: a function of the config, not a weight.
            taps = torch.hann_window(w + 2, periodic=False, dtype=torch.float32)[1:-1]
            kernel = (taps / taps.sum()).expand(config.latent_channels, 1, w).contiguous()
            self.register_buffer("smoothing_kernel", kernel, persistent=False)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def latent_rate(self) -> int:
        return self.config.latent_rate

    @property
    def context_frames(self) -> int:
        """R: latent frames of context each side that a decoded frame depends on."""
        return self._context

    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """audio [B, N], N a multiple of the hop -> (mean, logvar), each [B, latent_channels, N / hop]."""
        if audio.dim() != 2 or audio.shape[-1] % self.hop_length:
            raise ValueError(
                f"audio must be [batch, samples] with samples a multiple of {self.hop_length}, "
                f"got {tuple(audio.shape)}; crop or pad it first"
            )
        stats = self.encoder(audio.unsqueeze(1))
        mean, logvar = stats.chunk(2, dim=1)
        if self.config.latent_smoothing:
            mean = self.smooth(mean)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def smooth(self, z: Tensor) -> Tensor:
        """[B, latent_channels, F] -> the same, low-passed along time by the config's Hann window (edges
        replicated, so a clip's first and last frames are not pulled towards 0)."""
        half = self.config.latent_smoothing // 2
        padded = F.pad(z, (half, half), mode="replicate")
        return F.conv1d(padded, self.smoothing_kernel.to(z.dtype), groups=z.shape[1])

    def normalize(self, z: Tensor) -> Tensor:
        """Raw latent -> latent_gain * clip(z / latent_scale, -1, 1), the space DPD works in."""
        return (z / self.config.latent_scale).clamp(-1.0, 1.0) * self.config.latent_gain

    def latent(self, audio: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """audio [B, N] -> normalised latent [B, latent_channels, N / hop] (posterior mean or a sample)."""
        mean, logvar = self.encode(audio)
        return self.normalize(self._sample(mean, logvar, generator) if sample else mean)

    def decode(self, latent: Tensor) -> Tensor:
        """Normalised latent [B, latent_channels, F] -> audio [B, F * hop].

        Defined as: zero-pad R frames each side, run the decoder, keep the audio of the real frames.
        """
        r, hop = self.context_frames, self.hop_length
        audio = self.decoder(F.pad(latent / self.config.latent_gain, (r, r)))[:, 0]
        return audio[:, r * hop : audio.shape[-1] - r * hop]

    def decode_chunk(self, window: Tensor) -> Tensor:
        """Static-shape decode: window [B, latent_channels, R + C + R] -> audio of the C middle frames [B, C * hop]."""
        r, hop = self.context_frames, self.hop_length
        c = window.shape[-1] - 2 * r
        if c <= 0:
            raise ValueError(f"window of {window.shape[-1]} frames has no frames beside the 2 x {r} context frames")
        return self.decoder(window / self.config.latent_gain)[:, 0, r * hop : (r + c) * hop]

    def decode_chunked(self, latent: Tensor, chunk_frames: int) -> Tensor:
        """Same result as :meth:`decode`, computed with :meth:`decode_chunk` windows of ``chunk_frames``.

        latent [B, latent_channels, F] -> audio [B, F * hop]. The last window is zero-filled past the
        end (beyond R frames from any real frame, so it cannot change the result).
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        r, n = self.context_frames, latent.shape[-1]
        chunks = -(-n // chunk_frames)
        padded = F.pad(latent, (r, r + chunks * chunk_frames - n))
        pieces = [
            self.decode_chunk(padded[..., i * chunk_frames : i * chunk_frames + chunk_frames + 2 * r])
            for i in range(chunks)
        ]
        return torch.cat(pieces, dim=-1)[:, : n * self.hop_length]

    def forward(
        self, audio: Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: audio [B, N] -> (reconstruction [B, N], mean, logvar [B, latent_channels, N / hop])."""
        mean, logvar = self.encode(audio)
        z = self._sample(mean, logvar, generator) if sample else mean
        return self.decode(self.normalize(z)), mean, logvar

    @staticmethod
    def _sample(mean: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + torch.exp(0.5 * logvar) * eps


# ---------------------------------------------------------------------------------------------
# Compute per second of audio (for `melody-edge info`)


def decoder_flops_per_second(config: VAEConfig) -> int:
    """2 x multiply-accumulates of the decoder network per second of audio (biases and activations excluded)."""
    c = config
    rate = c.latent_rate
    macs = rate * c.latent_channels * c.dec_channels[0] * IO_KERNEL
    cin = c.dec_channels[0]
    for cout, k, u in zip(c.dec_channels, c.dec_kernels, c.dec_rates):
        macs += rate * cin * cout * k  # a transposed conv costs cin * cout * k per input sample
        rate *= u
        macs += rate * _mrf_macs_per_sample(cout, c.dec_res_kernels, c.dec_res_dilations)
        cin = cout
    macs += rate * cin * IO_KERNEL
    return 2 * macs


def encoder_flops_per_second(config: VAEConfig) -> int:
    """2 x multiply-accumulates of the encoder network per second of audio (biases and activations excluded)."""
    c = config
    rate = c.sample_rate
    macs = rate * c.enc_channels[0] * IO_KERNEL
    outs = (*c.enc_channels[1:], c.enc_channels[-1])
    for cin, cout, k, u in zip(c.enc_channels, outs, c.enc_kernels, c.enc_rates):
        macs += rate * _mrf_macs_per_sample(cin, c.enc_res_kernels, c.enc_res_dilations)
        rate //= u
        macs += rate * cin * cout * k
    macs += rate * outs[-1] * 2 * c.latent_channels * IO_KERNEL
    return 2 * macs
