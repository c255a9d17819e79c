from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from melody_edge.models.lm_guidance import with_cache_batch
from melody_edge.models.melody import build_model, preset, with_lm_guidance

_spec = importlib.util.spec_from_file_location(
    "lm_rerank_probe", Path(__file__).parents[2] / "benchmarks" / "lm_rerank_probe.py"
)
rerank = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rerank)
_key_spec = importlib.util.spec_from_file_location(
    "lm_key_probe", Path(__file__).parents[2] / "benchmarks" / "lm_key_probe.py"
)
key_probe = importlib.util.module_from_spec(_key_spec)
_key_spec.loader.exec_module(key_probe)

PREFIX = [*range(0, 1100, 100), 5]


def test_each_candidate_is_the_stream_the_guided_runtime_draws_for_its_seed(null_codes):
    """The probe ranks what users would get: candidate j equals the runtime's guided draw for seed j."""
    model = with_lm_guidance(build_model(preset("tiny"), seed=0), 3.0, null_codes)
    n = model.config.dpd.window_tokens
    lm = with_cache_batch(model.lm, 6)
    seeds = [0, 1, 1002]
    tokens, pmi = rerank.sample_candidates(lm, torch.tensor(PREFIX), torch.tensor(null_codes), n, seeds, 3.0, 0.9, 40)
    for row, seed in zip(tokens, seeds, strict=True):
        expected = key_probe.sample_window(model.streaming_lm(), torch.tensor(PREFIX), n, 0.9, 40, seed=seed)
        assert row.tolist() == expected.tolist()
    assert pmi.shape == (3, n) and torch.isfinite(pmi).all()
    assert model.lm.layers[0].cache.k.shape[0] == 1  # the caller's LM keeps its own cache


def test_pmi_is_zero_when_the_generic_prompt_is_the_caption(null_codes):
    model = build_model(preset("tiny"), seed=0)
    n = model.config.dpd.window_tokens
    lm = with_cache_batch(model.lm, 4)
    same = torch.tensor(null_codes)
    _, pmi = rerank.sample_candidates(lm, same, same, n, [0, 1], 3.0, 1.0, 0)
    assert torch.allclose(pmi, torch.zeros_like(pmi), atol=1e-5)
