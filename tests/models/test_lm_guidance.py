"""Classifier-free guidance on the LM: the guided LM against the formula on two full forwards."""

import pytest
import torch

from melody_edge.models.config import ConfigError
from melody_edge.models.lm import LM_PRESETS, SemanticLM
from melody_edge.models.lm_guidance import GuidedLM, guided_lm, streaming_lm, with_cache_batch
from melody_edge.models.melody import preset, with_lm_guidance

NULL = [3, 900, 41, 7, 512, 0, 77, 1023, 250, 9, 600, 18]


def tiny_lm() -> SemanticLM:
    torch.manual_seed(0)
    return SemanticLM(LM_PRESETS["tiny"]).eval()


@torch.no_grad()
def test_guided_prefill_and_decode_equal_the_formula_on_two_full_forwards():
    lm = tiny_lm()
    codes = torch.randint(0, 1024, (1, 12))
    semantic = torch.randint(0, 1024, (1, 40))
    cond = lm(torch.cat([lm.prefix_ids(codes), semantic], 1))
    free = lm(torch.cat([lm.prefix_ids(torch.tensor([NULL])), semantic], 1))
    want = free + 3.0 * (cond - free)

    guided = guided_lm(lm, NULL, 3.0)
    guided.reset_cache()
    steps = [guided.prefill(lm.prefix_ids(codes), 0)[:, -1:]]
    steps.append(guided.prefill(semantic[:, :20], 12))  # a prefill after the prefix copies the ids to both rows
    steps += [guided.decode(semantic[:, i : i + 1], 12 + i)[:, None] for i in range(20, 40)]
    got = torch.cat(steps, 1)[:, :-1]
    assert (got - want[:, 11:-1]).abs().max() / want.abs().max() < 1e-5
    # Guidance changes the prediction (the two rows differ), and the source LM keeps its batch-1 cache.
    assert not torch.allclose(cond[:, 11:], want[:, 11:], atol=1e-3)
    assert lm.layers[0].cache.k.shape[0] == 1 and guided.layers[0].cache.k.shape[0] == 2
    assert isinstance(guided, SemanticLM) and guided.state_dict().keys() == lm.state_dict().keys()


def test_streaming_lm_is_the_lm_itself_without_guidance_and_refuses_guidance_without_codes():
    lm = tiny_lm()
    assert streaming_lm(lm, (), None, 1.0) is lm
    assert isinstance(streaming_lm(lm, tuple(NULL), 2.0), GuidedLM)
    with pytest.raises(ValueError, match="lm_null_codes is empty"):
        streaming_lm(lm, (), 3.0)
    with pytest.raises(ValueError, match="12 codes"):
        guided_lm(lm, NULL[:5], 3.0)
    with pytest.raises(ValueError, match=r"\[0, 1024\)"):
        guided_lm(lm, [*NULL[:11], 1024], 3.0)


def test_config_validates_guidance_and_codes(tiny_model):
    cfg = preset("tiny")
    with pytest.raises(ConfigError, match="lm_guidance_scale"):
        cfg.replace(lm_guidance_scale=3.0)
    with pytest.raises(ConfigError, match="lm_null_codes"):
        cfg.replace(lm_null_codes=(1, 2, 3))
    with pytest.raises(ConfigError, match="lm_guidance_scale"):
        with_lm_guidance(tiny_model, 2.0)
    guided = with_lm_guidance(tiny_model, 2.0, NULL)
    assert guided.config.lm_null_codes == tuple(NULL) and guided.lm is tiny_model.lm
    assert isinstance(guided.streaming_lm(), GuidedLM) and guided.streaming_lm(1.0) is tiny_model.lm


@torch.no_grad()
def test_prefix_written_token_by_token_through_decode_equals_one_prefill():
    """The apps' ExecuTorch runners write every id through ``decode`` (docs/apps.md): the unconditional row
    must get the generic prompt's code at each prefix position then too."""
    guided = guided_lm(tiny_lm(), NULL, 3.0)
    ids = torch.cat([guided.prefix_ids(torch.randint(0, 1024, (1, 12))), torch.randint(0, 1024, (1, 5))], 1)
    guided.reset_cache()
    want = guided.prefill(ids, 0)[:, -1]
    guided.reset_cache()
    for pos in range(ids.shape[1]):
        got = guided.decode(ids[:, pos : pos + 1], pos)
    assert torch.allclose(got, want, atol=1e-5)


def test_guided_lm_refuses_a_batch_it_cannot_hold():
    guided = guided_lm(tiny_lm(), NULL, 3.0)
    with pytest.raises(ValueError, match="one sequence"):
        guided.prefill(torch.zeros(2, 3, dtype=torch.long), 0)


def test_with_cache_batch_streams_several_rows_with_the_same_weights_and_leaves_the_lm_alone():
    lm = tiny_lm()
    wide = with_cache_batch(lm, 3)
    ids = torch.randint(0, lm.config.vocab_size, (1, 5))
    with torch.no_grad():
        one = lm.prefill(ids, 0)
        three = wide.prefill(ids.repeat(3, 1), 0)
        step = wide.decode(torch.tensor([[1], [2], [1]]), 5)
    assert torch.allclose(three, one.expand(3, -1, -1), atol=1e-6)
    assert torch.allclose(step[0], step[2]) and not torch.allclose(step[0], step[1])
    assert wide.config.cache_batch_size == 3 and lm.config.cache_batch_size == 1
    assert lm.layers[0].cache.k.shape[0] == 1 and wide.layers[0].cache.k.shape[0] == 3
