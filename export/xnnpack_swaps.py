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
from ..models.lm import KVCache, LMAttention, SemanticLM
from ..models.sru import SRULayer
from ..models.vae import VAE, VAEDecoder


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


def _retype(module: nn.Module, cls: type[nn.Module], mean_of: tuple[str, int, Tensor] | None = None) -> None:
    """Retype ``module`` in place as ``cls`` (same weights), optionally adding a constant column of ``1/n``.

    Callers retype modules of a copy they made once, never the caller's model. mean_of: (buffer name,
    n, a tensor whose dtype and device the column takes); the buffer is not persistent, so the swapped
    module's state_dict is the original's.
    """
    module.__class__ = cls
    if mean_of is not None:
        name, n, like = mean_of
        column = torch.full((n, 1), 1.0 / n, dtype=like.dtype, device=like.device)
        module.register_buffer(name, column, persistent=False)


class ExplicitAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` (same weights) as explicit matmuls and softmax; unmasked only."""

    def forward(self, x, context=None, q_rotary=None, k_rotary=None, mask=None, is_causal=False) -> Tensor:
        if mask is not None or is_causal:
            raise ValueError("ExplicitAttention is for the DPD's unmasked attention only")
        q, k, v = self.project(x, context, q_rotary, k_rotary)
        return self.wo(self.merge_heads(bmm_attention(q, k, v)))


def bmm_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(Dh) + bias) v as 3-D bmm: q [B, H, T, Dh], k, v [B, H, S, Dh] -> [B, H, T, Dh].

    A 4-D matmul decomposes with an expand_copy of each operand (a portable copy); bias [T, S] is
    additive (0 or -inf) and must leave every row at least one finite score.
    """
    b, h, t, dh = q.shape
    q = (q * dh**-0.5).reshape(b * h, t, dh)
    k, v = (y.reshape(b * h, y.shape[2], dh) for y in (k, v))
    scores = torch.bmm(q, k.transpose(1, 2))
    if bias is not None:
        scores = scores + bias
    return torch.bmm(torch.softmax(scores, dim=-1), v).view(b, h, t, dh)


class ExplicitCachedAttention(LMAttention):
    """:class:`LMAttention` (same weights) with its masked attention over the cache as :func:`bmm_attention`.

    ``scaled_dot_product_attention`` with a boolean mask decomposes into portable ``where``/``eq``/``any``
    guards and a portable scaling of the whole key cache per step.
    """

    def forward_cached(
        self, x: Tensor, rotary: tuple[Tensor, Tensor], positions: Tensor, cache: KVCache, mask: Tensor
    ) -> Tensor:
        q, k, v = self.project_cached(x, rotary, positions, cache)
        # The mask keeps each position's own slot, so no row is all -inf.
        bias = torch.where(mask, 0.0, float("-inf"))
        return self.wo(self.merge_heads(bmm_attention(q, k, v, bias)))


def replace_attention_with_explicit(dpd: DualPathDiffusion) -> DualPathDiffusion:
    """A copy of ``dpd`` whose attention layers are :class:`ExplicitAttention`."""
    out = copy.deepcopy(dpd)
    for block in out.blocks:
        inter = block.inter
        _retype(inter.self_attn, ExplicitAttention)
        _retype(inter.cross_attn, ExplicitAttention)
    return out


class MatmulMeanRMSNorm(RMSNorm):
    """:class:`RMSNorm` (same weight) with the mean of squares as ``(x * x) @ [1/dim, ...]^T``."""

    mean_column: Tensor

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., dim] -> [..., dim]."""
        return x * torch.rsqrt(torch.matmul(x * x, self.mean_column) + self.eps) * self.weight


class MatmulMergeInterSegmentPath(InterSegmentPath):
    """:class:`InterSegmentPath` (same weights) whose segment merging is a matmul by ``[1/r, ...]^T``."""

    merge_column: Tensor

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
    for module in out.modules():
        if type(module) is InterSegmentPath:
            _retype(module, MatmulMergeInterSegmentPath, ("merge_column", module.merge_width, module.self_norm.weight))
        elif type(module) is RMSNorm:
            _retype(module, MatmulMeanRMSNorm, ("mean_column", module.weight.numel(), module.weight))
    return out


def _conv1d_as_2d(conv: nn.Conv1d | nn.ConvTranspose1d) -> nn.Conv2d | nn.ConvTranspose2d:
    """The same convolution over [B, C, 1, T]: kernel (1, k), the same weight values unsqueezed."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"only zero-padded convolutions with integer padding convert, got {conv}")
    kw = {
        "kernel_size": (1, conv.kernel_size[0]),
        "stride": (1, conv.stride[0]),
        "padding": (0, conv.padding[0]),
        "dilation": (1, conv.dilation[0]),
        "groups": conv.groups,
        "bias": conv.bias is not None,
    }
    if isinstance(conv, nn.ConvTranspose1d):
        out = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, output_padding=(0, conv.output_padding[0]), **kw)
    else:
        out = nn.Conv2d(conv.in_channels, conv.out_channels, **kw)
    with torch.no_grad():
        out.weight.copy_(conv.weight.unsqueeze(2))
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


class Conv2dVAEDecoder(nn.Module):
    """A :class:`VAEDecoder` (same weights) run as 2-D convolutions over [B, C, 1, T]: [B, C, F] -> [B, 1, N].

    Each ``Conv1d`` lowers to XNNPACK as unsqueeze, NHWC conv2d, squeeze, and the reshapes between
    them pin the layout, so the delegate transposed NCHW <-> NHWC around every convolution (76
    transposes, 34.5 of 245 ms of an ``edge`` decoder chunk). Kept 4-D from input to output, the
    decoder's other ops (LeakyReLU, add, the MRF mean, tanh) are layout-free and the layout changes
    only at the ends.
    """

    def __init__(self, decoder: VAEDecoder) -> None:
        """Takes ``decoder`` over and converts its convolutions in place: pass a copy to keep the original."""
        super().__init__()
        self.inner = decoder
        for parent in list(self.inner.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)):
                    setattr(parent, name, _conv1d_as_2d(child))

    def forward(self, z: Tensor) -> Tensor:
        return self.inner(z.unsqueeze(2)).squeeze(2)


def prepare_vae_for_xnnpack(vae: VAE) -> VAE:
    """A copy of ``vae`` whose decoder is a :class:`Conv2dVAEDecoder` (the encoder is unchanged)."""
    out = copy.deepcopy(vae)
    out.decoder = Conv2dVAEDecoder(out.decoder)
    return out


def prepare_lm_for_xnnpack(lm: SemanticLM) -> SemanticLM:
    """A copy of ``lm`` whose cached attention is :class:`ExplicitCachedAttention` (the training forward,
    which export never sees, is unchanged)."""
    out = copy.deepcopy(lm)
    for layer in out.layers:
        _retype(layer.attn, ExplicitCachedAttention)
    return out


def prepare_dpd_for_xnnpack(dpd: DualPathDiffusion) -> DualPathDiffusion:
    """All three swaps on a copy: the form ``executorch-xnnpack`` lowers."""
    return replace_mean_with_matmul(replace_attention_with_explicit(replace_sru_with_loop_form(dpd)))
