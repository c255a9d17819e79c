"""Building blocks shared by the semantic LM and the DPD's RoFormer layers.

Everything here exports with ``torch.export``: no Python-side state, positions are tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., dim] -> [..., dim]."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


def rotary_inv_freq(head_dim: int, theta: float) -> Tensor:
    """[head_dim / 2] inverse frequencies of rotary embeddings."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rotary_cos_sin(positions: Tensor, inv_freq: Tensor) -> tuple[Tensor, Tensor]:
    """positions: [T] (may be fractional) -> cos, sin: [T, head_dim / 2]."""
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return torch.cos(angles), torch.sin(angles)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (even, odd) of the last dim. x: [B, H, T, Dh]; cos/sin: [T, Dh/2]."""
    x_even = x[..., 0::2]
    x_odd = x[..., 1::2]
    rot_even = x_even * cos - x_odd * sin
    rot_odd = x_even * sin + x_odd * cos
    return torch.stack((rot_even, rot_odd), dim=-1).flatten(-2)


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with optional rotary positions on queries and keys."""

    def __init__(self, dim: int, n_heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        kv_dim = dim if kv_dim is None else kv_dim
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(kv_dim, dim, bias=False)
        self.wv = nn.Linear(kv_dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def split_heads(self, x: Tensor) -> Tensor:
        """[B, T, dim] -> [B, H, T, Dh]."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: Tensor) -> Tensor:
        """[B, H, T, Dh] -> [B, T, dim]."""
        b, h, t, d = x.shape
        return x.transpose(1, 2).reshape(b, t, h * d)

    def project(
        self,
        x: Tensor,
        context: Tensor | None,
        q_rotary: tuple[Tensor, Tensor] | None,
        k_rotary: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Heads of queries, keys and values [B, H, T or S, Dh], rotary positions applied."""
        src = x if context is None else context
        q = self.split_heads(self.wq(x))
        k = self.split_heads(self.wk(src))
        v = self.split_heads(self.wv(src))
        if q_rotary is not None:
            q = apply_rotary(q, *q_rotary)
        if k_rotary is not None:
            k = apply_rotary(k, *k_rotary)
        return q, k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        q_rotary: tuple[Tensor, Tensor] | None = None,
        k_rotary: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """x: [B, T, dim]; context: [B, S, kv_dim] (None for self-attention) -> [B, T, dim]."""
        q, k, v = self.project(x, context, q_rotary, k_rotary)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.wo(self.merge_heads(out))
