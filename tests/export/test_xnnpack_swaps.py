from collections import Counter

import pytest
import torch
from torch import nn

from melody_edge.export.adapters import LMDecode, VAEDecodeChunk
from melody_edge.export.xnnpack_swaps import (
    ExplicitAttention,
    ExplicitCachedAttention,
    LoopSRULayer,
    MatmulMeanRMSNorm,
    MatmulMergeInterSegmentPath,
    prepare_dpd_for_xnnpack,
    prepare_lm_for_xnnpack,
    prepare_vae_for_xnnpack,
    replace_mean_with_matmul,
    replace_sru_with_loop_form,
)
from melody_edge.models.dpd import DPD_PRESETS, DualPathDiffusion
from melody_edge.models.layers import RMSNorm
from melody_edge.models.lm import LM_PRESETS, LMAttention, SemanticLM
from melody_edge.models.sru import SRULayer
from melody_edge.models.vae import VAE, VAE_PRESETS


def _window_inputs(c):
    """One guided window's DPD inputs (batch 2) for config c."""
    return (
        torch.randn(2, c.latent_channels, c.window_frames),
        torch.rand(2, c.window_frames),
        torch.randint(c.token_vocab + 1, (2, c.window_tokens)),
    )


@torch.no_grad()
def test_loop_form_equals_the_stacked_scan():
    torch.manual_seed(0)
    sru = SRULayer(24)
    x = torch.randn(5, 16, 24)
    assert torch.allclose(LoopSRULayer(sru)(x), sru(x), atol=1e-6)


@torch.no_grad()
def test_swapped_dpd_is_a_copy_with_the_same_velocity_and_no_flip_or_split():
    torch.manual_seed(0)
    dpd = DualPathDiffusion(DPD_PRESETS["tiny"]).eval()
    swapped = replace_sru_with_loop_form(dpd)
    assert all(isinstance(s, SRULayer) for b in dpd.blocks for s in b.intra.srus)  # the original is untouched
    assert all(isinstance(s, LoopSRULayer) for b in swapped.blocks for s in b.intra.srus)
    c = dpd.config
    z, angles, tokens = _window_inputs(c)
    assert torch.allclose(swapped(z, angles, tokens), dpd(z, angles, tokens), atol=1e-5)

    def ops(module):
        graph = torch.export.export(module, (z, angles, tokens), strict=False).graph
        return Counter(str(n.target) for n in graph.nodes if n.op == "call_function")

    before, after = ops(dpd), ops(swapped)
    assert before["aten.flip.default"] == 3 * len(dpd.blocks)  # what the swap removes is really there
    assert after["aten.flip.default"] == 0
    assert after["aten.chunk.default"] == len(dpd.blocks)  # only FiLM's scale/shift split is left


@torch.no_grad()
def test_explicit_attention_equals_sdpa_and_drops_the_softmax_guard():
    torch.manual_seed(0)
    dpd = DualPathDiffusion(DPD_PRESETS["tiny"]).eval()
    ready = prepare_dpd_for_xnnpack(dpd)
    assert isinstance(ready.blocks[0].inter.cross_attn, ExplicitAttention)
    assert type(dpd.blocks[0].inter.cross_attn) is not ExplicitAttention  # the original is untouched
    c = dpd.config
    z, angles, tokens = _window_inputs(c)
    assert torch.allclose(ready(z, angles, tokens), dpd(z, angles, tokens), atol=1e-5)

    def decomposed_ops(module):
        graph = torch.export.export(module, (z, angles, tokens), strict=False).run_decompositions().graph
        return Counter(str(n.target) for n in graph.nodes if n.op == "call_function")

    before, after = decomposed_ops(dpd), decomposed_ops(ready)
    attentions = 2 * len(dpd.blocks)
    assert before["aten.where.self"] == before["aten.eq.Scalar"] == attentions  # the guard, once per attention
    assert after["aten.where.self"] == after["aten.eq.Scalar"] == after["aten.flip.default"] == 0, after
    assert after["aten._softmax.default"] == attentions
    with pytest.raises(ValueError, match="unmasked"):
        ready.blocks[0].inter.self_attn(torch.randn(1, 4, c.dim), is_causal=True)


@torch.no_grad()
def test_matmul_means_equal_the_mean_kernels_and_leave_one_mean():
    torch.manual_seed(0)
    dpd = DualPathDiffusion(DPD_PRESETS["tiny"]).eval()
    swapped = replace_mean_with_matmul(dpd)
    assert isinstance(swapped.blocks[0].inter, MatmulMergeInterSegmentPath)
    assert isinstance(swapped.blocks[0].inter.self_norm, MatmulMeanRMSNorm)
    assert isinstance(swapped.out_norm, MatmulMeanRMSNorm)
    assert type(dpd.blocks[0].inter.self_norm) is RMSNorm  # the original is untouched
    assert not any(k.endswith(("mean_column", "merge_column")) for k in swapped.state_dict())  # same weights
    c = dpd.config
    z, angles, tokens = _window_inputs(c)
    assert torch.allclose(swapped(z, angles, tokens), dpd(z, angles, tokens), atol=1e-5)

    def means(module):
        graph = torch.export.export(module, (z, angles, tokens), strict=False).run_decompositions().graph
        return sum(str(n.target) == "aten.mean.dim" for n in graph.nodes)

    norms = sum(type(m) is RMSNorm for m in dpd.modules())
    assert means(dpd) == norms + len(dpd.blocks) + 1  # norms, merges, and the window's mean token
    assert means(swapped) == 1


@torch.no_grad()
def test_lm_swap_equals_the_cached_sdpa_and_drops_its_guards():
    torch.manual_seed(0)
    lm = SemanticLM(LM_PRESETS["tiny"]).eval()
    swapped = prepare_lm_for_xnnpack(lm)
    assert all(type(layer.attn) is ExplicitCachedAttention for layer in swapped.layers)
    assert all(type(layer.attn) is LMAttention for layer in lm.layers)  # the original is untouched
    ids = torch.randint(lm.config.vocab_size, (1, 9))
    # Prefill, then decode on: the caches fill the same way and every logit agrees.
    assert torch.allclose(swapped.prefill(ids, 0), lm.prefill(ids, 0), atol=1e-5)
    for pos in range(9, 12):
        token = torch.tensor([[pos]])
        assert torch.allclose(swapped.decode(token, pos), lm.decode(token, pos), atol=1e-5)
    assert torch.equal(swapped.layers[0].cache.k, lm.layers[0].cache.k)

    def decomposed_ops(module):
        wrapped = LMDecode(module)
        graph = torch.export.export(wrapped, (torch.tensor([[3]]), torch.tensor([4])), strict=False)
        return Counter(str(n.target) for n in graph.run_decompositions().graph.nodes if n.op == "call_function")

    before, after = decomposed_ops(lm), decomposed_ops(swapped)
    layers = len(lm.layers)
    assert before["aten.any.dim"] == layers  # SDPA's fully-masked-row guard, once per layer
    assert after["aten.any.dim"] == 0 and after["aten.expand.default"] == 0, after
    assert after["aten.bmm.default"] == 2 * layers


@torch.no_grad()
def test_vae_decoder_as_2d_convolutions_is_equal_and_stays_4d():
    torch.manual_seed(0)
    vae = VAE(VAE_PRESETS["tiny"]).eval()
    swapped = prepare_vae_for_xnnpack(vae)
    assert not any(isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)) for m in swapped.decoder.modules())
    assert isinstance(vae.decoder.conv_pre, nn.Conv1d)  # the original is untouched
    window = torch.randn(1, vae.config.latent_channels, 2 * vae.context_frames + 4)
    assert torch.allclose(swapped.decode_chunk(window), vae.decode_chunk(window), atol=1e-6)

    graph = torch.export.export(VAEDecodeChunk(swapped), (window,), strict=False).run_decompositions().graph
    convs = [n for n in graph.nodes if str(n.target) == "aten.convolution.default"]
    assert len(convs) == sum(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in swapped.decoder.modules())
    assert all(len(n.args[0].meta["val"].shape) == 4 for n in convs)
    # Nothing between the convolutions changes the rank: one unsqueeze in, one squeeze out.
    reshapes = [n for n in graph.nodes if str(n.target).split(".")[-2:-1] in (["unsqueeze"], ["squeeze"], ["view"])]
    assert len(reshapes) == 2, [str(n.target) for n in reshapes]
