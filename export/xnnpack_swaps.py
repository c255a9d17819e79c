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

**Means as matmuls.** XNNPACK delegates ``mean`` only over the last two dims of a 4-D tensor. The
DPD's RMSNorms (mean of squares over the last dim) and its segment merging (mean over each run of
``merge_width`` frames) are neither, so each ran as a portable kernel; after the first two swaps they
were the largest portable cost of a ``tiny`` window pass. :class:`MatmulMeanRMSNorm` and
:class:`MatmulMergeInterSegmentPath` take the same means as a matmul by a constant column of ``1/n``,
which XNNPACK runs as a GEMM.

:func:`prepare_dpd_for_xnnpack` applies all three to a copy.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..models.dpd import DualPathDiffusion, InterSegmentPath
from ..models.layers import MultiHeadAttention, RMSNorm
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
        b, h, t, dh = q.shape
        # 3-D bmm: a 4-D matmul decomposes with an expand_copy of each operand (a portable copy).
        q, k, v = (y.reshape(b * h, y.shape[2], dh) for y in (q, k, v))
        scores = torch.bmm(q, k.transpose(1, 2)) * (dh**-0.5)
        heads = torch.bmm(torch.softmax(scores, dim=-1), v).view(b, h, t, dh)
        return self.wo(self.merge_heads(heads))


def replace_attention_with_explicit(dpd: DualPathDiffusion) -> DualPathDiffusion:
    """A copy of ``dpd`` whose attention layers are :class:`ExplicitAttention`."""
    out = copy.deepcopy(dpd)
    for block in out.blocks:
        inter = block.inter
        inter.self_attn = ExplicitAttention.from_attention(inter.self_attn)
        inter.cross_attn = ExplicitAttention.from_attention(inter.cross_attn)
    return out


def _mean_column(n: int, like: Tensor) -> Tensor:
    return torch.full((n, 1), 1.0 / n, dtype=like.dtype, device=like.device)


class MatmulMeanRMSNorm(RMSNorm):
    """:class:`RMSNorm` (same weight) with the mean of squares as ``(x * x) @ [1/dim, ...]^T``."""

    mean_column: Tensor

    @classmethod
    def from_norm(cls, norm: RMSNorm) -> MatmulMeanRMSNorm:
        out = copy.deepcopy(norm)
        out.__class__ = cls
        out.register_buffer("mean_column", _mean_column(norm.weight.numel(), norm.weight), persistent=False)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., dim] -> [..., dim]."""
        return x * torch.rsqrt(torch.matmul(x * x, self.mean_column) + self.eps) * self.weight


class MatmulMergeInterSegmentPath(InterSegmentPath):
    """:class:`InterSegmentPath` (same weights) whose segment merging is a matmul by ``[1/r, ...]^T``."""

    merge_column: Tensor

    @classmethod
    def from_path(cls, path: InterSegmentPath) -> MatmulMergeInterSegmentPath:
        out = copy.deepcopy(path)
        out.__class__ = cls
        like = path.self_norm.weight
        out.register_buffer("merge_column", _mean_column(path.merge_width, like), persistent=False)
        return out

    def merge(self, x: Tensor) -> Tensor:
        """[B, N, K, D] -> [B, N, K / merge_width, D]."""
        b, n, k, d = x.shape
        kk, r = k // self.merge_width, self.merge_width
        # One 2-D matmul by a constant column lowers to an XNNPACK GEMM; a 5-D matmul broadcasts the
        # column with a portable expand_copy first.
        runs = x.view(b, n, kk, r, d).transpose(3, 4).reshape(b * n * kk * d, r)
        return torch.matmul(runs, self.merge_column).view(b, n, kk, d)


def replace_mean_with_matmul(dpd: DualPathDiffusion) -> DualPathDiffusion:
    """A copy of ``dpd`` whose RMSNorms and segment merges take their means as matmuls."""
    out = copy.deepcopy(dpd)
    for block in out.blocks:
        block.inter = MatmulMergeInterSegmentPath.from_path(block.inter)
    # After the paths are replaced: from_path copies them, norms and all.
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is RMSNorm:
                setattr(parent, name, MatmulMeanRMSNorm.from_norm(child))
    return out


def prepare_dpd_for_xnnpack(dpd: DualPathDiffusion) -> DualPathDiffusion:
    """All three swaps on a copy: the form ``executorch-xnnpack`` lowers."""
    return replace_mean_with_matmul(replace_attention_with_explicit(replace_sru_with_loop_form(dpd)))
