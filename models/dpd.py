"""Dual-path diffusion (DPD): the velocity network over a window of VAE latents.

Layout of one window (paper numbers): L = 2500 latent frames at 250 Hz (10 s), split into
M = 4 chunks. Frames are cut into N overlapping segments of K = 64 frames (hop K/2), processed by
``n_blocks`` dual-path blocks, and folded back by overlap-add:

* inter-segment ("coarse") path: average r adjacent frames inside each segment (r = the block's
  merge width), run a RoFormer layer across segments (self-attention, then cross-attention to the
  semantic-token embeddings with time-aligned rotary positions), repeat the update back r times;
* intra-segment ("fine") path: a bidirectional SRU inside each segment, FiLM-modulated by the
  per-frame angle embedding plus the mean semantic embedding (plus, with ``frame_token_film``, the
  embedding of the frame's own token).

Semantic token id ``token_vocab`` is the null token: classifier-free guidance's unconditional pass
and tokens not generated yet both use it.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigBase, require
from .layers import MultiHeadAttention, RMSNorm, SwiGLU, rotary_cos_sin, rotary_inv_freq
from .sru import SRULayer


@dataclasses.dataclass(frozen=True)
class DPDConfig(ConfigBase):
    latent_channels: int = 16
    dim: int = 256
    n_blocks: int = 6
    n_heads: int = 4
    ffn_dim: int = 1024
    segment_frames: int = 64
    merge_widths: tuple[int, ...] = (16, 8, 4, 4, 8, 16)
    sru_layers: int = 2
    angle_dim: int = 256
    token_vocab: int = 1024
    window_frames: int = 2500
    chunks: int = 4
    frames_per_token: int = 10
    cond_drop_prob: float = 0.1
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    parallel_scan: bool = False
    # FiLM also sees the embedding of each frame's own semantic token (repeated frames_per_token
    # times), not only the window mean: the fine path then knows which token it is rendering
    # without having to find it through cross-attention first.
    frame_token_film: bool = False
    # With F > 0 a token is also embedded from its k-means centroid in the tokenizer's feature space (a
    # saved buffer [token_vocab + 1, F], null row zero) through a learned linear map that starts at zero.
    # Token ids are arbitrary labels; centroids say what each token sounds like, so tokens that sound
    # alike start alike and the DPD can read them before it has seen each of the 1024 ids often.
    token_feature_dim: int = 0
    # A Gaussian prior per semantic token over the clean latent (mean and variance per channel, fitted on
    # the training latents and saved as buffers [token_vocab + 1, C]; the null row holds the global
    # statistics). The network outputs a residual on the closed-form velocity that prior implies, and
    # sees the prior's posterior-mean latent as a second input. A token -> mean-latent table alone explains
    # about a third of the demo latents' variance, which the plain network had not learned to use.
    token_prior: bool = False

    def validate(self) -> None:
        for name in ("latent_channels", "dim", "n_blocks", "n_heads", "ffn_dim", "sru_layers", "angle_dim"):
            require(getattr(self, name) > 0, name, "must be a positive integer")
        require(self.dim % self.n_heads == 0, "n_heads", f"must divide dim ({self.dim})")
        require((self.dim // self.n_heads) % 2 == 0, "n_heads", "dim / n_heads must be even (rotary)")
        require(
            self.segment_frames >= 2 and self.segment_frames % 2 == 0,
            "segment_frames",
            "must be an even integer >= 2 (segments overlap by half)",
        )
        require(
            len(self.merge_widths) == self.n_blocks,
            "merge_widths",
            f"needs one merge width per block ({self.n_blocks}), got {len(self.merge_widths)}",
        )
        for i, r in enumerate(self.merge_widths):
            require(
                r > 0 and self.segment_frames % r == 0,
                f"merge_widths[{i}]",
                f"{r} must be a positive divisor of segment_frames ({self.segment_frames})",
            )
        require(self.token_vocab > 0, "token_vocab", "must be a positive integer")
        require(self.chunks > 0, "chunks", "must be a positive integer")
        require(
            self.window_frames > 0 and self.window_frames % self.chunks == 0,
            "window_frames",
            f"must be a positive multiple of chunks ({self.chunks})",
        )
        require(self.frames_per_token > 0, "frames_per_token", "must be a positive integer")
        require(
            self.window_frames % self.frames_per_token == 0,
            "window_frames",
            f"must be a multiple of frames_per_token ({self.frames_per_token}) so a window holds whole tokens",
        )
        require(0.0 <= self.cond_drop_prob < 1.0, "cond_drop_prob", "must be in [0, 1)")
        require(self.token_feature_dim >= 0, "token_feature_dim", "must be >= 0 (0 = ids only)")

    @property
    def chunk_frames(self) -> int:
        return self.window_frames // self.chunks

    @property
    def window_tokens(self) -> int:
        return self.window_frames // self.frames_per_token

    @property
    def null_token(self) -> int:
        return self.token_vocab

    @property
    def segment_hop(self) -> int:
        return self.segment_frames // 2

    @property
    def num_segments(self) -> int:
        return math.ceil((self.window_frames + 2 * self.segment_hop) / self.segment_hop) - 1


def segment(x: Tensor, segment_frames: int) -> Tensor:
    """[B, L, D] -> [B, N, K, D]: segments of K frames with hop K/2 (zero-padded by K/2 each side)."""
    b, length, d = x.shape
    hop = segment_frames // 2
    blocks = math.ceil((length + 2 * hop) / hop)
    x = F.pad(x, (0, 0, hop, blocks * hop - length - hop))
    x = x.view(b, blocks, hop, d)
    return torch.cat([x[:, :-1], x[:, 1:]], dim=2)


def overlap_add(seg: Tensor, length: int) -> Tensor:
    """Inverse of :func:`segment`: [B, N, K, D] -> [B, L, D], averaging the two segments per frame."""
    b, n, k, d = seg.shape
    hop = k // 2
    first = F.pad(seg[:, :, :hop], (0, 0, 0, 0, 0, 1))
    second = F.pad(seg[:, :, hop:], (0, 0, 0, 0, 1, 0))
    out = (0.5 * (first + second)).reshape(b, (n + 1) * hop, d)
    return out[:, hop : hop + length]


class AngleEmbedding(nn.Module):
    """Per-frame angle -> [dim]: cos(d) * e_start + sin(d) * e_end (spherical interpolation), then an MLP."""

    def __init__(self, angle_dim: int, dim: int) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.randn(angle_dim) / math.sqrt(angle_dim))
        self.end = nn.Parameter(torch.randn(angle_dim) / math.sqrt(angle_dim))
        self.mlp = nn.Sequential(nn.Linear(angle_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, angles: Tensor) -> Tensor:
        """angles: [B, L] in [0, pi/2] -> [B, L, dim]."""
        a = angles[..., None]
        return self.mlp(torch.cos(a) * self.start + torch.sin(a) * self.end)


class InterSegmentPath(nn.Module):
    """Segment merging + RoFormer layer (self-attention, cross-attention, SwiGLU) + repeat back."""

    def __init__(self, config: DPDConfig, merge_width: int) -> None:
        super().__init__()
        self.merge_width = merge_width
        self.self_norm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = MultiHeadAttention(config.dim, config.n_heads)
        self.cross_norm = RMSNorm(config.dim, config.norm_eps)
        self.cross_attn = MultiHeadAttention(config.dim, config.n_heads)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn = SwiGLU(config.dim, config.ffn_dim)

    def merge(self, x: Tensor) -> Tensor:
        """Mean over each run of ``merge_width`` frames: [B, N, K, D] -> [B, N, K / merge_width, D]."""
        b, n, k, d = x.shape
        return x.view(b, n, k // self.merge_width, self.merge_width, d).mean(3)

    def forward(
        self, x: Tensor, tokens: Tensor, seg_rotary: tuple[Tensor, Tensor], tok_rotary: tuple[Tensor, Tensor]
    ) -> Tensor:
        """x: [B, N, K, D]; tokens: [B, S, D] -> [B, N, K, D]."""
        b, n, k, d = x.shape
        r = self.merge_width
        kk = k // r
        merged = self.merge(x).permute(0, 2, 1, 3)  # [B, K', N, D]
        h = merged.reshape(b * kk, n, d)
        h = h + self.self_attn(self.self_norm(h), q_rotary=seg_rotary, k_rotary=seg_rotary)
        # Every merged position of a batch item attends to the same tokens: fold K' into the query
        # length instead of repeating the keys K' times.
        q_rot = (seg_rotary[0].repeat(kk, 1), seg_rotary[1].repeat(kk, 1))
        hq = h.reshape(b, kk * n, d)
        hq = hq + self.cross_attn(self.cross_norm(hq), tokens, q_rotary=q_rot, k_rotary=tok_rotary)
        hq = hq + self.ffn(self.ffn_norm(hq))
        delta = (hq.view(b, kk, n, d) - merged).permute(0, 2, 1, 3)  # [B, N, K', D]
        # Repeat back by broadcasting (the same sums as adding delta.repeat_interleave(r, dim=2)): no
        # repeated copy is materialised, and exporters see one broadcast add instead of a portable copy.
        return (x.view(b, n, kk, r, d) + delta.unsqueeze(3)).view(b, n, k, d)


class IntraSegmentPath(nn.Module):
    """FiLM-modulated bidirectional SRU stack inside each segment."""

    def __init__(self, config: DPDConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.film = nn.Linear(config.dim, 2 * config.dim)
        self.srus = nn.ModuleList(SRULayer(config.dim, config.parallel_scan) for _ in range(config.sru_layers))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x, cond: [B, N, K, D] -> [B, N, K, D]."""
        b, n, k, d = x.shape
        gamma, beta = self.film(cond).chunk(2, dim=-1)
        h = (self.norm(x) * (1.0 + gamma) + beta).reshape(b * n, k, d)
        for sru in self.srus:
            h = sru(h)
        return x + h.view(b, n, k, d)


class DualPathBlock(nn.Module):
    def __init__(self, config: DPDConfig, merge_width: int) -> None:
        super().__init__()
        self.inter = InterSegmentPath(config, merge_width)
        self.intra = IntraSegmentPath(config)

    def forward(self, x: Tensor, cond: Tensor, tokens: Tensor, seg_rotary, tok_rotary) -> Tensor:
        return self.intra(self.inter(x, tokens, seg_rotary, tok_rotary), cond)


class DualPathDiffusion(nn.Module):
    """Velocity network v(z_delta; delta, tokens) for one window."""

    def __init__(self, config: DPDConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.in_proj = nn.Linear(c.latent_channels, c.dim)
        self.angle_embed = AngleEmbedding(c.angle_dim, c.dim)
        self.token_embed = nn.Embedding(c.token_vocab + 1, c.dim)
        if c.token_feature_dim:
            self.register_buffer("token_features", torch.zeros(c.token_vocab + 1, c.token_feature_dim))
            self.token_feature_proj = nn.Linear(c.token_feature_dim, c.dim)
            # Zero start: the centroid path adds nothing until training finds it useful, so weights
            # trained without it load and behave exactly as before.
            nn.init.zeros_(self.token_feature_proj.weight)
            nn.init.zeros_(self.token_feature_proj.bias)
        if c.token_prior:
            # Random until fitted (set_token_prior), like the parameters: a model with random weights then
            # exercises every term of the prior, so exports of untrained configs test it too.
            rows = (c.token_vocab + 1, c.latent_channels)
            self.register_buffer("token_latent_mean", 0.5 * torch.randn(rows))
            self.register_buffer("token_latent_var", torch.exp(0.5 * torch.randn(rows)))
            self.prior_proj = nn.Linear(c.latent_channels, c.dim)
        self.blocks = nn.ModuleList(DualPathBlock(c, r) for r in c.merge_widths)
        self.out_norm = RMSNorm(c.dim, c.norm_eps)
        self.out_proj = nn.Linear(c.dim, c.latent_channels)
        head_dim = c.dim // c.n_heads
        inv_freq = rotary_inv_freq(head_dim, c.rope_theta)
        # Queries sit at segment centres, keys at token centres, both in token units, so rotary
        # cross-attention sees their relative time.
        seg_pos = torch.arange(c.num_segments, dtype=torch.float32) * c.segment_hop / c.frames_per_token
        tok_pos = torch.arange(c.window_tokens, dtype=torch.float32) + 0.5
        for name, pos in (("seg", seg_pos), ("tok", tok_pos)):
            cos, sin = rotary_cos_sin(pos, inv_freq)
            self.register_buffer(f"{name}_cos", cos, persistent=False)
            self.register_buffer(f"{name}_sin", sin, persistent=False)

    @torch.no_grad()
    def set_token_features(self, centroids: Tensor) -> None:
        """Store the tokenizer's centroids [token_vocab, token_feature_dim] as the tokens' features."""
        c = self.config
        if not c.token_feature_dim:
            raise ValueError("this DPD config has token_feature_dim 0: it embeds token ids only")
        if tuple(centroids.shape) != (c.token_vocab, c.token_feature_dim):
            raise ValueError(
                f"token features must be [{c.token_vocab}, {c.token_feature_dim}] (one centroid per token), got "
                f"{tuple(centroids.shape)}: the tokenizer's feature size must equal dpd.token_feature_dim"
            )
        if not bool(torch.isfinite(centroids).all()):
            raise ValueError("token features hold NaN/Inf values: refit the tokenizer")
        self.token_features[: c.token_vocab] = centroids.to(self.token_features)
        self.token_features[c.token_vocab :] = 0.0

    @torch.no_grad()
    def set_token_prior(self, mean: Tensor, var: Tensor) -> None:
        """Store the per-token latent statistics, each [token_vocab + 1, C] (last row: the null token)."""
        c = self.config
        if not c.token_prior:
            raise ValueError("this DPD config has token_prior false: it has no token prior to set")
        want = (c.token_vocab + 1, c.latent_channels)
        for name, t in (("mean", mean), ("var", var)):
            if tuple(t.shape) != want:
                raise ValueError(
                    f"token prior {name} must be {list(want)} (one row per token + null), got {list(t.shape)}"
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"token prior {name} holds NaN/Inf values: refit it from finite latents")
        if not bool((var > 0).all()):
            raise ValueError("token prior variances must be > 0")
        self.token_latent_mean.copy_(mean)
        self.token_latent_var.copy_(var)

    def prior(self, z: Tensor, angles: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean of the clean latent and of the velocity under the token prior, each [B, C, L].

        With x0 ~ N(m, s2) per frame and channel (the frame's token's statistics) and
        z = cos d * x0 + sin d * eps: E[x0 | z] = m + cos d * s2 * r / q and
        E[v | z] = sin d * cos d * (1 - s2) * r / q - sin d * m, where r = z - cos d * m and
        q = cos^2 d * s2 + sin^2 d. Frames are grouped by token ([B, C, S, frames_per_token]) so the
        statistics broadcast instead of being repeated.
        """
        c = self.config
        b, ch, length = z.shape
        n_tok = tokens.shape[1]
        shape = (b, ch, n_tok, c.frames_per_token)
        mean = F.embedding(tokens, self.token_latent_mean).transpose(1, 2)[..., None]  # [B, C, S, 1]
        var = F.embedding(tokens, self.token_latent_var).transpose(1, 2)[..., None]
        a = angles.view(b, 1, n_tok, c.frames_per_token)
        cos, sin = torch.cos(a), torch.sin(a)
        r = z.view(shape) - cos * mean
        gain = r / (cos * cos * var + sin * sin)
        x0 = mean + cos * var * gain
        v = sin * cos * (1.0 - var) * gain - sin * mean
        return x0.reshape(b, ch, length), v.reshape(b, ch, length)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """[B, S] ids (null allowed) -> [B, S, dim]."""
        tok = self.token_embed(tokens)
        if self.config.token_feature_dim:
            tok = tok + self.token_feature_proj(F.embedding(tokens, self.token_features))
        return tok

    def forward(self, z: Tensor, angles: Tensor, tokens: Tensor) -> Tensor:
        """z: [B, C, L] noisy latents; angles: [B, L] per-frame angle; tokens: [B, S] ids (null allowed).

        Returns the predicted velocity [B, C, L]. L and S must equal the config's window sizes.
        """
        c = self.config
        length = z.shape[-1]
        x = self.in_proj(z.transpose(1, 2))  # [B, L, D]
        if c.token_prior:
            x0_prior, v_prior = self.prior(z, angles, tokens)
            x = x + self.prior_proj(x0_prior.transpose(1, 2))
        tok = self.embed_tokens(tokens)  # [B, S, D]
        cond = self.angle_embed(angles) + tok.mean(dim=1, keepdim=True)
        if c.frame_token_film:
            b, n_tok, d = tok.shape
            cond = (cond.view(b, n_tok, c.frames_per_token, d) + tok[:, :, None]).view(b, length, d)
        x = segment(x, c.segment_frames)
        cond = segment(cond, c.segment_frames)
        seg_rotary = (self.seg_cos, self.seg_sin)
        tok_rotary = (self.tok_cos, self.tok_sin)
        for block in self.blocks:
            x = block(x, cond, tok, seg_rotary, tok_rotary)
        x = overlap_add(x, length)
        v = self.out_proj(self.out_norm(x)).transpose(1, 2)
        return v + v_prior if c.token_prior else v


def chunk_angles(chunk_angles: Tensor, chunk_frames: int) -> Tensor:
    """[B, M] per-chunk angles -> [B, M * chunk_frames] per-frame angles."""
    return chunk_angles.repeat_interleave(chunk_frames, dim=1)


@dataclasses.dataclass
class DPDLossTerms:
    """What one training pass of :func:`dpd_loss_terms` computed.

    loss: the velocity MSE (scalar); x0: the clean-latent estimate ``cos d * z - sin d * v_hat`` [B, C, L];
    conditioned: [B, M] bool, chunks that saw their real tokens (not dropped, not cut to pure noise).
    """

    loss: Tensor
    x0: Tensor
    conditioned: Tensor


def dpd_loss_terms(
    model: DualPathDiffusion,
    z0: Tensor,
    tokens: Tensor,
    generator: torch.Generator | None = None,
    cond_drop_prob: float | None = None,
    future_null_prob: float = 0.0,
) -> DPDLossTerms:
    """Velocity MSE with multi-chunk angles, and the clean-latent estimate it implies.

    Each of the M chunks draws its own angle in [0, pi/2]; ``z = cos d * z0 + sin d * eps`` and the
    target is ``v = cos d * eps - sin d * z0``. With probability ``cond_drop_prob`` (default: the
    config's 0.1) an example's tokens become the null token (classifier-free guidance). With
    probability ``future_null_prob`` a random chunk boundary is chosen, later chunks are set to pure
    noise (angle pi/2) and their tokens to null: this teaches the progressive first window used for
    a short time to first audio (docs/streaming.md).
    z0: [B, C, L] clean latents; tokens: [B, S].
    """
    c = model.config
    b = z0.shape[0]
    dev = z0.device
    drop = c.cond_drop_prob if cond_drop_prob is None else cond_drop_prob
    delta = torch.rand(b, c.chunks, generator=generator, device=dev) * (math.pi / 2)
    tokens = tokens.clone()
    chunk_idx = torch.arange(c.chunks, device=dev)[None]
    cut = torch.full((b,), c.chunks, device=dev, dtype=torch.long)
    if future_null_prob > 0:
        cut = torch.randint(1, c.chunks + 1, (b,), generator=generator, device=dev)
        use = torch.rand(b, generator=generator, device=dev) < future_null_prob
        cut = torch.where(use, cut, torch.full_like(cut, c.chunks))
        delta = torch.where(chunk_idx >= cut[:, None], torch.full_like(delta, math.pi / 2), delta)
        tok_chunk = (torch.arange(tokens.shape[1], device=dev) * c.chunks) // tokens.shape[1]
        tokens = torch.where(tok_chunk[None] >= cut[:, None], torch.full_like(tokens, c.null_token), tokens)
    dropped = torch.rand(b, generator=generator, device=dev) < drop
    tokens = torch.where(dropped[:, None], torch.full_like(tokens, c.null_token), tokens)
    angles = chunk_angles(delta, c.chunk_frames)
    noise = torch.randn(z0.shape, generator=generator, device=dev)
    cos, sin = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    z = cos * z0 + sin * noise
    target = cos * noise - sin * z0
    v = model(z, angles, tokens)
    conditioned = (chunk_idx < cut[:, None]) & ~dropped[:, None]
    return DPDLossTerms(F.mse_loss(v, target), cos * z - sin * v, conditioned)


DPD_PRESETS: dict[str, DPDConfig] = {
    # Segments of 16 frames instead of 64 keep the unrolled SRU short, so test exports lower quickly.
    "tiny": DPDConfig(
        dim=32,
        n_blocks=2,
        n_heads=2,
        ffn_dim=64,
        segment_frames=16,
        merge_widths=(4, 4),
        sru_layers=1,
        angle_dim=32,
        frame_token_film=True,
        token_feature_dim=64,
        # Tested here so every export path carries it; a 1,614-step demo run with it did not carry the
        # key better than without (docs/model_card.md), so the trained presets leave it off for now.
        token_prior=True,
    ),
    # Sized for streaming on a phone CPU: the cost per second of audio is steps x chunks x the window
    # pass, so width and depth are small (docs/configs.md has the FLOP budget).
    "edge": DPDConfig(
        dim=128,
        n_blocks=4,
        n_heads=4,
        ffn_dim=512,
        merge_widths=(8, 4, 4, 8),
        frame_token_film=True,
        token_feature_dim=128,
    ),
    # Trained on 2 CPU cores: a one-layer SRU over 32-frame segments is the cheapest fine path to
    # back-propagate through; the coarse path keeps the paper's shape.
    "demo": DPDConfig(
        dim=96,
        n_blocks=4,
        n_heads=4,
        ffn_dim=384,
        segment_frames=32,
        merge_widths=(8, 4, 4, 8),
        sru_layers=1,
        angle_dim=64,
        frame_token_film=True,
        token_feature_dim=140,  # the demo tokenizer's 64 log-mel + 64 delta + 12 chroma features
    ),
    # The paper's 296.6M: hidden 768, 8 dual-path blocks, 2-layer bidirectional SRU; merge widths
    # shortest in the middle blocks.
    "paper": DPDConfig(
        dim=768,
        n_blocks=8,
        n_heads=12,
        ffn_dim=9216,
        merge_widths=(32, 16, 8, 4, 4, 8, 16, 32),
    ),
}
