"""Module swaps for ExecuTorch XNNPACK: equal forms of the DPD's SRU and attention with XNNPACK kernels.

Operators XNNPACK has no kernel for run as ExecuTorch portable kernels between the delegated
partitions, and on the DPD those were most of a window pass.

**SRU: no ``flip``, no activation ``chunk``.**

:class:`~melody_edge.models.sru.SRULayer` runs both directions in one scan by stacking the
time-reversed rows under the forward ones (three ``flip`` calls per layer) and splits one wide gate
projection with ``chunk``. Neither has an XNNPACK kernel, so both run as ExecuTorch portable
operators between the delegated partitions. An ETDump profile of the ``edge`` DPD (docs/benchmarks.md)
put the portable ``flip`` at 46 % of a window pass and ``split_with_sizes_copy`` at another 11 %.

:class:`LoopSRULayer` computes the same function with one linear per gate (slices of the same weights)
and the backward direction as a loop that runs from the last frame to the first, writing each state
straight into its own time slot. :func:`replace_sru_with_loop_form` swaps it into a copy of a DPD; the
model in ``models/`` stays as it is (its single scan is the faster form for eager training).

**Attention without the safe-softmax guard.** ``scaled_dot_product_attention`` decomposes into a
softmax guarded by ``where(eq(scores, -inf))`` (for fully masked rows), both portable.
:class:`ExplicitAttention` computes ``softmax(q k^T / sqrt(d)) v`` directly; the DPD's attention has
no mask, so no row can be fully masked and the guard never changes a value.

:func:`prepare_dpd_for_xnnpack` applies both to a copy.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..models.dpd import DualPathDiffusion
from ..models.layers import MultiHeadAttention
from ..models.sru import SRULayer


def _linear_rows(src: nn.Linear, lo: int, hi: int) -> nn.Linear:
    out = nn.Linear(src.in_features, hi - lo, bias=src.bias is not None)
    with torch.no_grad():
        out.weight.copy_(src.weight[lo:hi])
        if src.bias is not None:
            out.bias.copy_(src.bias[lo:hi])
    return out


class LoopSRULayer(nn.Module):
    """Same function as an :class:`SRULayer` (its weights, sliced): [N, K, dim] -> [N, K, dim]."""

    def __init__(self, sru: SRULayer) -> None:
        super().__init__()
        d = sru.dim
        # SRULayer.proj rows: forward (candidate, forget, reset), then backward (the same three).
        names = ("cand_fwd", "forget_fwd", "reset_fwd", "cand_bwd", "forget_bwd", "reset_bwd")
        for i, name in enumerate(names):
            setattr(self, name, _linear_rows(sru.proj, i * d, (i + 1) * d))
        self.out = copy.deepcopy(sru.out)

    @staticmethod
    def _direction(x: Tensor, cand: Tensor, forget: Tensor, reset: Tensor, reverse: bool) -> Tensor:
        f = torch.sigmoid(forget)
        r = torch.sigmoid(reset)
        b = (1.0 - f) * cand
        k = x.shape[1]
        c = torch.zeros_like(b[:, 0])
        states: list[Tensor | None] = [None] * k
        for t in reversed(range(k)) if reverse else range(k):
            c = f[:, t] * c + b[:, t]
            states[t] = c
        return r * torch.stack(states, dim=1) + (1.0 - r) * x

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, K, dim] -> [N, K, dim]."""
        h_fwd = self._direction(x, self.cand_fwd(x), self.forget_fwd(x), self.reset_fwd(x), reverse=False)
        h_bwd = self._direction(x, self.cand_bwd(x), self.forget_bwd(x), self.reset_bwd(x), reverse=True)
        return self.out(torch.cat([h_fwd, h_bwd], dim=-1))


def replace_sru_with_loop_form(dpd: DualPathDiffusion) -> DualPathDiffusion:
    """A copy of ``dpd`` whose SRU layers are :class:`LoopSRULayer`; ``dpd`` itself is not changed."""
    out = copy.deepcopy(dpd)
    for block in out.blocks:
        srus = block.intra.srus
        for i, sru in enumerate(srus):
            if isinstance(sru, SRULayer):
                srus[i] = LoopSRULayer(sru)
    return out


class ExplicitAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` (same weights) as explicit matmuls and softmax; unmasked only."""

    @classmethod
    def from_attention(cls, attn: MultiHeadAttention) -> ExplicitAttention:
        out = copy.deepcopy(attn)
        out.__class__ = cls
        return out

    def forward(self, x, context=None, q_rotary=None, k_rotary=None, mask=None, is_causal=False) -> Tensor:
        if mask is not None or is_causal:
            raise ValueError("ExplicitAttention is for the DPD's unmasked attention only")
        q, k, v = self.project(x, context, q_rotary, k_rotary)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (self.head_dim**-0.5)
        return self.wo(self.merge_heads(torch.matmul(torch.softmax(scores, dim=-1), v)))


def replace_attention_with_explicit(dpd: DualPathDiffusion) -> DualPathDiffusion:
    """A copy of ``dpd`` whose attention layers are :class:`ExplicitAttention`."""
    out = copy.deepcopy(dpd)
    for block in out.blocks:
        inter = block.inter
        inter.self_attn = ExplicitAttention.from_attention(inter.self_attn)
        inter.cross_attn = ExplicitAttention.from_attention(inter.cross_attn)
    return out


def prepare_dpd_for_xnnpack(dpd: DualPathDiffusion) -> DualPathDiffusion:
    """Both swaps on a copy: the form ``executorch-xnnpack`` lowers."""
    return replace_attention_with_explicit(replace_sru_with_loop_form(dpd))
