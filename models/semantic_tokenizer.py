"""Audio -> 25 Hz semantic tokens (vocabulary 1024): the pluggable interface and a built-in k-means tokenizer.

MeLoDy takes its semantic tokens from k-means over a self-supervised music encoder (its own
Wav2Vec2-Conformer; MusicLM: w2v-BERT layer 7). Neither is released, so the built-in tokenizer clusters
hand-made features instead: per token (40 ms) the mean log-mel spectrum of four 10 ms sub-frames plus its
time delta across tokens. It is a placeholder with the right interface, rate and vocabulary; k-means over
a learned encoder (MERT, w2v-BERT 2.0) is ``encoder_tokenizer.py``, and both share :class:`CentroidTokenizer`
(see ``docs/conditioning.md``).

Length convention: ``N`` samples give exactly ``N // hop`` tokens (hop = 960 at 24 kHz / 25 Hz). A trailing
partial token is dropped; the STFT pads the ends by reflection so the first and last tokens see whole windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .config import ConfigBase, require

_LOG_EPS = 1e-6  # floor under mel power before the log: -13.8, far below any audible band energy
_STD_FLOOR = 1e-5  # a constant feature (e.g. a band no training audio reaches) must not blow up
_MAX_DIST_ELEMENTS = 1 << 24  # rows x centroids per distance block: 64 MB of float32
CHROMA_BINS = 12
_CHROMA_RANGE_HZ = (55.0, 2000.0)  # A1 to B6: where the data's fundamentals and strong low harmonics lie


@runtime_checkable
class SemanticTokenizer(Protocol):
    """Anything that turns 24 kHz audio into semantic tokens the LM and DPD can use."""

    token_rate: float
    vocab_size: int

    def tokenize(self, audio: Tensor) -> Tensor:
        """audio: float ``[B, N]`` at 24 kHz -> long ``[B, N // hop]`` in ``[0, vocab_size)``."""
        ...


# ---------------------------------------------------------------------------------------------------------------
# k-means (shared with the residual vector quantizer in conditioning.py)


def nearest_centroid(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Index and squared distance of the nearest centroid for each row.

    x: ``[N, D]``, centroids: ``[K, D]`` -> (long ``[N]``, float ``[N]``). Rows are processed in blocks so
    that 100k frames x 1024 centroids never materialise a full ``[N, K]`` matrix. Ties go to the lowest index.
    """
    n, k = x.shape[0], centroids.shape[0]
    c_sq = centroids.pow(2).sum(1)
    block = max(1, _MAX_DIST_ELEMENTS // max(k, 1))
    idx = torch.empty(n, dtype=torch.long, device=x.device)
    dist = torch.empty(n, dtype=x.dtype, device=x.device)
    for start in range(0, n, block):
        xb = x[start : start + block]
        # ||x||^2 is constant per row, so the argmin needs only ||c||^2 - 2 x.c
        partial = torch.addmm(c_sq.unsqueeze(0), xb, centroids.t(), beta=1.0, alpha=-2.0)
        best, arg = partial.min(dim=1)
        idx[start : start + block] = arg
        dist[start : start + block] = (best + xb.pow(2).sum(1)).clamp_min(0.0)
    return idx, dist


def _init_centroids(x: Tensor, k: int, init: str, gen: torch.Generator) -> Tensor:
    n = x.shape[0]
    if n < k:
        # Fewer points than centroids: every point once, the spare centroids sampled with replacement, all
        # jittered so that copies of a point are distinct vectors (ties would otherwise go to the lowest
        # index). Spare centroids sit next to real points, so any code they receive still decodes to data.
        pick = torch.cat([torch.randperm(n, generator=gen), torch.randint(0, n, (k - n,), generator=gen)])
        scale = 1e-3 * float(x.std()) if n > 1 else 1e-3
        return x[pick] + scale * torch.randn(k, x.shape[1], generator=gen, dtype=x.dtype)
    if init == "random":
        return x[torch.randperm(n, generator=gen)[:k]].clone()
    # k-means++: each new centroid is drawn with probability proportional to its squared distance to the
    # nearest centroid chosen so far (Arthur & Vassilvitskii 2007).
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype)
    x_sq = x.pow(2).sum(1)
    j = int(torch.randint(0, n, (1,), generator=gen))
    d2 = torch.full((n,), float("inf"), dtype=x.dtype)
    for i in range(k):
        centroids[i] = x[j]
        # A mat-vec instead of (x - c)^2: about 7x faster, which matters for 1024 sequential steps.
        d2 = torch.minimum(d2, (x_sq - 2.0 * (x @ x[j]) + x_sq[j]).clamp_min(0.0))
        if i == k - 1:
            break
        cumulative = torch.cumsum(d2.double(), 0)
        total = float(cumulative[-1])
        if total <= 0.0:  # every point already coincides with a centroid (duplicates in the data)
            j = int(torch.randint(0, n, (1,), generator=gen))
        else:
            # Inverse-CDF draw; right=True never lands on a zero-weight point.
            r = torch.rand(1, generator=gen, dtype=torch.float64) * total
            j = min(int(torch.searchsorted(cumulative, r, right=True)), n - 1)
    return centroids


def kmeans(x: Tensor, k: int, iters: int = 20, seed: int = 0, init: str = "kmeans++") -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on ``x: [N, D]`` -> (centroids ``[k, D]``, mean squared distance per iteration ``[<=iters+1]``).

    Deterministic for a ``seed`` (its own generator; the global RNG is untouched). ``init`` is ``"kmeans++"``
    or ``"random"``. With ``N < k`` the centroids start as jittered copies of the points: each point once,
    the rest sampled with replacement (see :func:`_init_centroids`). A cluster that empties is moved onto the
    worst-fitted point, which keeps the whole vocabulary in use when ``N >= k``. Stops early when no assignment
    changes.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, D] tensor, got shape {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"kmeans needs k >= 1, got {k}")
    if init not in ("kmeans++", "random"):
        raise ValueError(f"kmeans init must be 'kmeans++' or 'random', got {init!r}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("kmeans input holds NaN/Inf values; clean the features first")
    x = x.detach().to(torch.float32, copy=False).cpu()
    gen = torch.Generator().manual_seed(seed)
    centroids = _init_centroids(x, k, init, gen)
    idx, dist = nearest_centroid(x, centroids)
    history = [float(dist.mean())]
    for _ in range(iters):
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        counts = torch.bincount(idx, minlength=k)
        filled = counts > 0
        centroids = torch.where(filled.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype), centroids)
        empty = (~filled).nonzero().squeeze(1)
        if len(empty) > 0 and x.shape[0] >= k:
            worst = dist.topk(len(empty)).indices
            centroids[empty] = x[worst]
        new_idx, dist = nearest_centroid(x, centroids)
        history.append(float(dist.mean()))
        if torch.equal(new_idx, idx):
            break
        idx = new_idx
    return centroids, torch.tensor(history)


# ---------------------------------------------------------------------------------------------------------------
# Mel filterbank (no torchaudio / librosa)


def hz_to_mel(hz: Tensor, scale: str = "htk") -> Tensor:
    """HTK: 2595 log10(1 + f/700). Slaney: linear 3/200 mel per Hz below 1 kHz, logarithmic above."""
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(hz < min_log_hz, hz / f_sp, min_log_mel + torch.log(hz.clamp_min(1e-10) / min_log_hz) / logstep)


def mel_to_hz(mel: Tensor, scale: str = "htk") -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(mel < min_log_mel, mel * f_sp, min_log_hz * torch.exp(logstep * (mel - min_log_mel)))


def chroma_map(n_fft: int, sample_rate: int) -> Tensor:
    """``[n_fft // 2 + 1, 12]`` 0/1: which pitch class (C first, nearest equal-tempered, A = 440 Hz) each FFT
    bin between 55 Hz and 2 kHz folds onto; other bins map nowhere."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    lo, hi = _CHROMA_RANGE_HZ
    keep = (freqs >= lo) & (freqs <= hi)
    out = torch.zeros(freqs.numel(), CHROMA_BINS)
    pcs = (torch.round(12 * torch.log2(freqs[keep] / 440.0)).long() + 9) % 12  # A is pitch class 9
    out[keep.nonzero().flatten(), pcs] = 1.0
    return out


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float, scale: str = "htk") -> Tensor:
    """Triangular filters ``[n_fft // 2 + 1, n_mels]``, peak 1, edges on equally spaced mel points.

    ``scale="slaney"`` also area-normalises each filter (2 / bandwidth), as librosa's default does; ``"htk"``
    keeps unit peaks (the filters then sum to 1 between the first and last centre frequencies).
    """
    freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    m_lo, m_hi = (
        hz_to_mel(torch.tensor(float(f_min), dtype=torch.float64), scale),
        hz_to_mel(torch.tensor(float(f_max), dtype=torch.float64), scale),
    )
    edges = mel_to_hz(torch.linspace(float(m_lo), float(m_hi), n_mels + 2, dtype=torch.float64), scale)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    f = freqs.unsqueeze(1)
    rising = (f - lower) / (centre - lower)
    falling = (upper - f) / (upper - centre)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if scale == "slaney":
        fb = fb * (2.0 / (upper - lower))
    return fb.to(torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# Built-in tokenizer


@dataclasses.dataclass(frozen=True)
class KMeansTokenizerConfig(ConfigBase):
    """Log-mel + delta features at the token rate, standardised, then nearest of ``vocab_size`` centroids."""

    sample_rate: int = 24000
    token_rate: int = 25
    n_fft: int = 1024
    frames_per_token: int = 4  # STFT sub-frames averaged into one token (4 -> 10 ms hop at 25 Hz)
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 12000.0
    mel_scale: str = "htk"
    # With w > 0 each token also gets a 12-bin chroma (pitch-class) block, weighted w after standardisation.
    # 64 mel bands at n_fft 1024 are tens of Hz wide below 1 kHz, wider than a semitone there, so log-mel
    # clusters group tokens by timbre and loudness and hardly by pitch: on the demo data a token -> chroma
    # table read the key of 35 % of held-out clips from such tokens and 51 % (real audio 53 %) with this block
    # at w = 3 (docs/model_card.md). 0 keeps the log-mel + delta features.
    chroma_weight: float = 0.0
    chroma_n_fft: int = 4096  # 171 ms at 24 kHz: resolves semitones down to about 100 Hz
    vocab_size: int = 1024
    kind: str = "kmeans"  # tells this config from other tokenizers' in melody.json (models/tokenizers.py)

    def validate(self) -> None:
        require(self.kind == "kmeans", "kind", f"{self.kind!r} is not this config's kind; use 'kmeans'")
        require(self.sample_rate > 0, "sample_rate", "must be > 0 (24000 for MeLoDy)")
        require(self.token_rate > 0, "token_rate", "must be > 0 (25 for MeLoDy)")
        require(
            self.sample_rate % self.token_rate == 0,
            "token_rate",
            f"must divide sample_rate {self.sample_rate} so every token covers a whole number of samples",
        )
        hop = self.sample_rate // self.token_rate
        require(self.frames_per_token >= 1, "frames_per_token", "must be >= 1")
        require(
            hop % self.frames_per_token == 0,
            "frames_per_token",
            f"must divide the token hop {hop} samples (e.g. 1, 2, 4, 8)",
        )
        require(
            hop // self.frames_per_token <= self.n_fft <= 2 * hop,
            "n_fft",
            f"must be in [{hop // self.frames_per_token}, {2 * hop}]: at least one STFT hop so no sample is skipped, "
            "at most two token hops so reflect padding works on a one-token input",
        )
        require(self.n_mels >= 1, "n_mels", "must be >= 1")
        require(self.mel_scale in ("htk", "slaney"), "mel_scale", "must be 'htk' or 'slaney'")
        require(0.0 <= self.f_min < self.f_max, "f_min", f"must be >= 0 and below f_max {self.f_max}")
        require(
            self.f_max <= self.sample_rate / 2,
            "f_max",
            f"must be <= the Nyquist frequency {self.sample_rate / 2} Hz",
        )
        fb = mel_filterbank(self.n_fft, self.n_mels, self.sample_rate, self.f_min, self.f_max, self.mel_scale)
        empty = (fb.sum(0) == 0).nonzero().flatten().tolist()
        require(
            not empty,
            "n_mels",
            f"{self.n_mels} mel bands are too narrow for n_fft {self.n_fft}: band(s) {empty[:4]} get no FFT bin; "
            "lower n_mels or raise n_fft",
        )
        require(self.vocab_size >= 2, "vocab_size", "must be >= 2 (1024 for MeLoDy)")
        require(self.chroma_weight >= 0.0, "chroma_weight", "must be >= 0 (0 = no chroma block)")
        require(
            self.chroma_n_fft >= 2 * self.hop_length and self.chroma_n_fft % 2 == 0,
            "chroma_n_fft",
            f"must be even and >= two token hops ({2 * self.hop_length} samples) so every token gets a chroma frame",
        )

    @property
    def hop_length(self) -> int:
        """Samples per token (960 at 24 kHz / 25 Hz)."""
        return self.sample_rate // self.token_rate

    @property
    def feature_dim(self) -> int:
        """Log-mel plus its delta (plus 12 chroma bins when ``chroma_weight`` > 0)."""
        return 2 * self.n_mels + (CHROMA_BINS if self.chroma_weight > 0 else 0)


class CentroidTokenizer(nn.Module):
    """Features per token, standardised, then the nearest of ``vocab_size`` centroids: the shared half of
    every built-in tokenizer. Subclasses define :meth:`features`; the config gives ``sample_rate``,
    ``token_rate``, ``hop_length``, ``feature_dim`` and ``vocab_size``.

    Persistent state (saved in checkpoints): ``feature_mean``/``feature_std`` ``[F]`` and ``centroids``
    ``[vocab_size, F]`` in standardised feature space. Before :meth:`fit` the centroids are random (drawn from
    the global RNG), which is enough to exercise the pipeline but meaningless as tokens.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        f = config.feature_dim
        self.register_buffer("feature_mean", torch.zeros(f))
        self.register_buffer("feature_std", torch.ones(f))
        self.register_buffer("centroids", torch.randn(config.vocab_size, f))

    @property
    def token_rate(self) -> float:
        return float(self.config.token_rate)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def _check_audio(self, audio: Tensor) -> Tensor:
        if not isinstance(audio, Tensor) or audio.dim() != 2:
            shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
            raise ValueError(f"audio must be a float tensor [B, N] at {self.config.sample_rate} Hz, got {shape}")
        if not audio.is_floating_point():
            raise ValueError(f"audio must be floating point, got {audio.dtype}")
        return audio.to(torch.float32)

    def features(self, audio: Tensor) -> Tensor:
        """Raw (unstandardised) features: audio ``[B, N]`` -> ``[B, N // hop, feature_dim]``."""
        raise NotImplementedError

    def feature_weights(self) -> Tensor:
        """``[F]``: how much each standardised feature counts in the distance to a centroid (all 1 here).

        :meth:`fit` folds them into ``feature_std`` (std / weight), so :meth:`standardize` applies them.
        """
        return torch.ones(self.config.feature_dim)

    def standardize(self, feats: Tensor) -> Tensor:
        """``[..., F]`` -> the same, with the stored per-feature mean and (weighted) std removed."""
        return (feats - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def tokenize(self, audio: Tensor) -> Tensor:
        """audio ``[B, N]`` float at 24 kHz -> long ``[B, N // 960]`` in ``[0, vocab_size)``."""
        feats = self.standardize(self.features(audio))
        b, t, f = feats.shape
        if t == 0:
            return torch.zeros(b, 0, dtype=torch.long, device=audio.device)
        idx, _ = nearest_centroid(feats.reshape(b * t, f), self.centroids)
        return idx.reshape(b, t)

    @torch.no_grad()
    def fit(
        self,
        data: Sequence[Tensor] | Tensor,
        iters: int = 20,
        seed: int = 0,
        init: str = "kmeans++",
        max_frames: int | None = None,
    ) -> Tensor:
        """Set the standardisation stats and the centroids from training data; deterministic for ``seed``.

        data: a list/tuple of audio tensors (``[N]`` or ``[B, N]`` each, 24 kHz), or one tensor of raw
        features ``[M, F]`` / ``[B, T, F]`` from :meth:`features`. ``max_frames`` keeps a seeded random subset
        of the frames (k-means cost is linear in it). Returns the mean squared distance per k-means iteration.
        """
        feats = self._collect_features(data)
        if max_frames is not None and feats.shape[0] > max_frames:
            gen = torch.Generator().manual_seed(seed)
            feats = feats[torch.randperm(feats.shape[0], generator=gen)[:max_frames]]
        mean = feats.mean(0)
        std = feats.std(0, unbiased=False).clamp_min(_STD_FLOOR) if feats.shape[0] > 1 else torch.ones_like(mean)
        std = std / self.feature_weights()
        centroids, history = kmeans((feats - mean) / std, self.config.vocab_size, iters=iters, seed=seed, init=init)
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)
        self.centroids.copy_(centroids)
        return history

    def _collect_features(self, data: Sequence[Tensor] | Tensor) -> Tensor:
        f = self.config.feature_dim
        if isinstance(data, Tensor):
            if data.dim() not in (2, 3) or data.shape[-1] != f:
                raise ValueError(
                    f"a tensor passed to fit must be raw features [M, {f}] or [B, T, {f}], got {tuple(data.shape)}; "
                    "pass audio as a list of tensors"
                )
            feats = data.reshape(-1, f)
        else:
            parts = []
            for i, clip in enumerate(data):
                clip = clip.unsqueeze(0) if isinstance(clip, Tensor) and clip.dim() == 1 else clip
                try:
                    parts.append(self.features(clip).reshape(-1, f))
                except ValueError as exc:
                    raise ValueError(f"audio clip {i}: {exc}") from exc
            feats = torch.cat(parts) if parts else torch.zeros(0, f)
        if feats.shape[0] == 0:
            raise ValueError(
                f"fit got no frames: each clip needs at least {self.config.hop_length} samples (one token)"
            )
        return feats.to(torch.float32)


class KMeansSemanticTokenizer(CentroidTokenizer):
    """Implements :class:`SemanticTokenizer` with log-mel features and k-means (see the module docstring)."""

    def __init__(self, config: KMeansTokenizerConfig) -> None:
        super().__init__(config)
        # Derived from the config, so kept out of the checkpoint.
        self.register_buffer("window", torch.hann_window(config.n_fft, periodic=True), persistent=False)
        fb = mel_filterbank(
            config.n_fft, config.n_mels, config.sample_rate, config.f_min, config.f_max, config.mel_scale
        )
        self.register_buffer("mel_fb", fb, persistent=False)
        if config.chroma_weight > 0:
            self.register_buffer("chroma_window", torch.hann_window(config.chroma_n_fft), persistent=False)
            self.register_buffer("chroma_map", chroma_map(config.chroma_n_fft, config.sample_rate), persistent=False)

    def feature_weights(self) -> Tensor:
        w = torch.ones(self.config.feature_dim)
        if self.config.chroma_weight > 0:
            w[-CHROMA_BINS:] = self.config.chroma_weight
        return w

    def chroma(self, audio: Tensor, tokens: int) -> Tensor:
        """audio ``[B, N]`` -> ``[B, tokens, 12]``: each token's pitch-class distribution (sums to 1), square-rooted.

        One ``chroma_n_fft`` frame centred on each token's middle (zero-padded past the ends), power between
        55 Hz and 2 kHz folded onto 12 pitch classes, C first. The square root tempers the loudest class.
        """
        cfg = self.config
        hop, n = cfg.hop_length, cfg.chroma_n_fft
        x = torch.nn.functional.pad(audio[:, hop // 2 : tokens * hop], (n // 2, n // 2))
        spec = torch.stft(x, n, hop_length=hop, window=self.chroma_window, center=False, return_complex=True)
        power = (spec.real.pow(2) + spec.imag.pow(2))[:, :, :tokens]  # [B, n//2+1, tokens]
        pcs = torch.einsum("bfn,fc->bnc", power, self.chroma_map)
        return (pcs / pcs.sum(-1, keepdim=True).clamp_min(1e-12)).sqrt()

    def features(self, audio: Tensor) -> Tensor:
        """Raw (unstandardised) features: audio ``[B, N]`` -> ``[B, N // hop, feature_dim]``.

        Columns ``[:n_mels]`` are the token's mean log-mel power over its sub-frames, ``[n_mels:2 * n_mels]`` the
        central difference of that across neighbouring tokens (one-sided at the ends), then the chroma block
        when ``chroma_weight`` > 0 (:meth:`chroma`).
        """
        audio = self._check_audio(audio)
        cfg = self.config
        hop, k = cfg.hop_length, cfg.frames_per_token
        b, t = audio.shape[0], audio.shape[1] // hop
        if t == 0:
            return audio.new_zeros(b, 0, cfg.feature_dim)
        x = audio[:, : t * hop]
        sub = hop // k
        # Pad so sub-frame j of token i is centred at i*hop + (j + 1/2)*sub: each token's frames sit
        # symmetrically inside it and exactly t*k frames come out.
        left = (cfg.n_fft - sub) // 2
        right = cfg.n_fft - sub - left
        x = torch.nn.functional.pad(x.unsqueeze(1), (left, right), mode="reflect").squeeze(1)
        spec = torch.stft(x, cfg.n_fft, hop_length=sub, window=self.window, center=False, return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # [B, n_fft//2+1, t*k]
        mel = torch.einsum("bfn,fm->bnm", power, self.mel_fb)  # [B, t*k, n_mels]
        logmel = torch.log(mel + _LOG_EPS).reshape(b, t, k, cfg.n_mels).mean(2)
        if t == 1:
            delta = torch.zeros_like(logmel)
        else:
            padded = torch.cat([logmel[:, :1], logmel, logmel[:, -1:]], dim=1)
            delta = padded[:, 2:] - padded[:, :-2]
            delta[:, 1:-1] *= 0.5  # central difference inside, one-sided difference at the two ends
        parts = [logmel, delta] + ([self.chroma(audio, t)] if cfg.chroma_weight > 0 else [])
        return torch.cat(parts, dim=-1)


TOKENIZER_PRESETS: dict[str, KMeansTokenizerConfig] = {
    # Fewer mel bands keep CPU tests fast; the vocabulary stays 1024 because the LM's is fixed.
    "tiny": KMeansTokenizerConfig(n_fft=512, n_mels=32),
    "edge": KMeansTokenizerConfig(n_fft=1024, n_mels=64),
    # A chroma block: the log-mel features alone leave pitch out of the tokens (see chroma_weight).
    "demo": KMeansTokenizerConfig(n_fft=1024, n_mels=64, chroma_weight=3.0),
    "paper": KMeansTokenizerConfig(n_fft=1920, n_mels=128),
}
