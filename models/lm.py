"""Semantic LM: a LLaMA-style decoder over 25 Hz semantic tokens, prefixed by 12 MuLan-style tokens.

Token ids share one embedding table: ids ``[0, vocab_size)`` are semantic tokens and
``vocab_size + level * codebook_size + code`` are the MuLan prefix tokens (each RVQ level has its own
offset). The output head predicts semantic tokens only.

The KV cache is a pair of preallocated buffers per layer, written by position with ``index_copy_``
(no hooks, no Python dicts), so ``prefill`` and ``decode`` export as methods sharing mutable state.
Sampling lives outside the network (``melody_edge.runtime.sampling``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigBase, require
from .layers import MultiHeadAttention, RMSNorm, SwiGLU, apply_rotary, rotary_cos_sin, rotary_inv_freq


@dataclasses.dataclass(frozen=True)
class LMConfig(ConfigBase):
    vocab_size: int = 1024
    prefix_levels: int = 12
    prefix_codebook_size: int = 1024
    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    ffn_dim: int = 1536
    max_seq_len: int = 262
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    cache_batch_size: int = 1

    def validate(self) -> None:
        for name in ("vocab_size", "prefix_levels", "prefix_codebook_size", "dim", "n_layers", "n_heads"):
            require(getattr(self, name) > 0, name, "must be a positive integer")
        require(self.ffn_dim > 0, "ffn_dim", "must be a positive integer")
        require(self.dim % self.n_heads == 0, "n_heads", f"must divide dim ({self.dim})")
        require((self.dim // self.n_heads) % 2 == 0, "n_heads", "dim / n_heads must be even for rotary positions")
        require(
            self.max_seq_len > self.prefix_levels,
            "max_seq_len",
            f"must exceed the {self.prefix_levels}-token prefix (prefix + window tokens)",
        )
        require(self.rope_theta > 0, "rope_theta", "must be positive")
        require(self.cache_batch_size > 0, "cache_batch_size", "must be a positive integer")

    @property
    def embedding_rows(self) -> int:
        return self.vocab_size + self.prefix_levels * self.prefix_codebook_size

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class KVCache(nn.Module):
    """Preallocated key/value buffers [B, H, max_seq_len, Dh], updated in place by position."""

    def __init__(self, batch: int, n_heads: int, max_seq_len: int, head_dim: int) -> None:
        super().__init__()
        shape = (batch, n_heads, max_seq_len, head_dim)
        # Non-persistent: runtime state, never part of a checkpoint.
        self.register_buffer("k", torch.zeros(shape), persistent=False)
        self.register_buffer("v", torch.zeros(shape), persistent=False)

    def update(self, positions: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """positions: [T] long; k, v: [B, H, T, Dh] -> full caches [B, H, max_seq_len, Dh]."""
        self.k.index_copy_(2, positions, k)
        self.v.index_copy_(2, positions, v)
        return self.k, self.v


class LMAttention(MultiHeadAttention):
    def project_cached(
        self, x: Tensor, rotary: tuple[Tensor, Tensor], positions: Tensor, cache: KVCache
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries [B, H, T, Dh] of x at ``positions``, and the cache's keys and values [B, H, max_seq_len, Dh]
        after writing this step's into it."""
        q = apply_rotary(self.split_heads(self.wq(x)), *rotary)
        k = apply_rotary(self.split_heads(self.wk(x)), *rotary)
        v = self.split_heads(self.wv(x))
        k_all, v_all = cache.update(positions, k, v)
        b = x.shape[0]
        return q, k_all[:b], v_all[:b]

    def forward_cached(
        self, x: Tensor, rotary: tuple[Tensor, Tensor], positions: Tensor, cache: KVCache, mask: Tensor
    ) -> Tensor:
        """x: [B, T, dim] at ``positions`` [T]; attends to the cache under ``mask`` [T, max_seq_len]."""
        q, k, v = self.project_cached(x, rotary, positions, cache)
        return self.wo(self.merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class LMBlock(nn.Module):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = LMAttention(config.dim, config.n_heads)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn = SwiGLU(config.dim, config.ffn_dim)
        self.cache = KVCache(config.cache_batch_size, config.n_heads, config.max_seq_len, config.head_dim)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        """Full causal pass (training): x [B, T, dim] -> [B, T, dim]."""
        x = x + self.attn(self.attn_norm(x), q_rotary=rotary, k_rotary=rotary, is_causal=True)
        return x + self.ffn(self.ffn_norm(x))

    def forward_cached(self, x: Tensor, rotary: tuple[Tensor, Tensor], positions: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn.forward_cached(self.attn_norm(x), rotary, positions, self.cache, mask)
        return x + self.ffn(self.ffn_norm(x))


class SemanticLM(nn.Module):
    """Decoder-only Transformer (RMSNorm, rotary positions, SwiGLU) over [prefix | semantic] ids."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.embedding_rows, config.dim)
        self.layers = nn.ModuleList(LMBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.register_buffer("inv_freq", rotary_inv_freq(config.head_dim, config.rope_theta), persistent=False)
        self.register_buffer("cache_positions", torch.arange(config.max_seq_len), persistent=False)

    def prefix_ids(self, codes: Tensor) -> Tensor:
        """MuLan codes [B, levels] in [0, codebook) -> embedding ids [B, levels] (per-level offsets)."""
        c = self.config
        offsets = c.vocab_size + torch.arange(c.prefix_levels, device=codes.device) * c.prefix_codebook_size
        return codes.long() + offsets

    def forward(self, ids: Tensor) -> Tensor:
        """Full causal forward without the cache. ids: [B, T] -> logits [B, T, vocab_size]."""
        return self.forward_embeddings(self.embed(ids))

    def forward_embeddings(self, x: Tensor) -> Tensor:
        """Full causal forward from input embeddings x: [B, T, dim] -> logits [B, T, vocab_size].

        Training computes some rows itself (``training/lm_prefix.py``); everything else goes through ``forward``.
        """
        positions = torch.arange(x.shape[1], device=x.device)
        rotary = rotary_cos_sin(positions, self.inv_freq)
        for layer in self.layers:
            x = layer(x, rotary)
        return self.head(self.norm(x))

    def prefill(self, ids: Tensor, start_pos: Tensor | int) -> Tensor:
        """Write ids [B, T] into the cache at positions start_pos.. and return logits [B, T, vocab_size].

        ``start_pos`` is a long tensor of shape [1] (or an int). Slots after the last written position
        are masked, so stale entries from an earlier window never leak into attention.
        """
        start = torch.as_tensor(start_pos, dtype=torch.long, device=ids.device).reshape(1)
        positions = start + torch.arange(ids.shape[1], device=ids.device)
        rotary = rotary_cos_sin(positions, self.inv_freq)
        mask = self.cache_positions[None, :] <= positions[:, None]
        x = self.embed(ids)
        for layer in self.layers:
            x = layer.forward_cached(x, rotary, positions, mask)
        return self.head(self.norm(x))

    def decode(self, token: Tensor, pos: Tensor | int) -> Tensor:
        """One step: token [B, 1] at position pos -> logits [B, vocab_size]."""
        return self.prefill(token, pos)[:, -1]

    @torch.no_grad()
    def reset_cache(self) -> None:
        for layer in self.layers:
            layer.cache.k.zero_()
            layer.cache.v.zero_()


def lm_loss(model: SemanticLM, prefix_codes: Tensor, semantic: Tensor) -> Tensor:
    """Next-token cross-entropy on the semantic part.

    prefix_codes: [B, levels] MuLan codes; semantic: [B, S] tokens. The logit at the last prefix
    position predicts semantic[:, 0], so every semantic token is a target.
    """
    ids = torch.cat([model.prefix_ids(prefix_codes), semantic.long()], dim=1)
    logits = model(ids[:, :-1])[:, model.config.prefix_levels - 1 :]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), semantic.reshape(-1).long())


LM_PRESETS: dict[str, LMConfig] = {
    "tiny": LMConfig(dim=64, n_layers=2, n_heads=4, ffn_dim=128),
    # ~20M: decode on a phone CPU is bound by reading the weights once per token; 8 x 384 keeps a
    # 63-token chunk under ~0.1 s at int8. See docs/configs.md.
    "edge": LMConfig(dim=384, n_layers=8, n_heads=6, ffn_dim=1024),
    # The trained demo checkpoint (docs/model_card.md): small enough to train on 2 CPU cores.
    "demo": LMConfig(dim=256, n_layers=6, n_heads=4, ffn_dim=768),
    # The paper's 429.5M: MusicLM's semantic stage shape (24 x 1024, 16 heads); SwiGLU width 4224
    # (a multiple of 128, so int4 group sizes up to 128 divide every linear).
    "paper": LMConfig(dim=1024, n_layers=24, n_heads=16, ffn_dim=4224),
}
