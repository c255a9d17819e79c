from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from melody_edge.models.melody import build_model, preset
from melody_edge.runtime.eager import EagerBackend
from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator

_spec = importlib.util.spec_from_file_location(
    "lm_key_probe", Path(__file__).parents[2] / "benchmarks" / "lm_key_probe.py"
)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)

PREFIX = [*range(0, 1100, 100), 5]


def test_sample_window_draws_the_tokens_the_streaming_runtime_draws():
    """The probe's figure is about what users get: the same tokens as the runtime for a seed and temperature."""
    model = build_model(preset("tiny"), seed=0)
    backend = EagerBackend(model)
    n = backend.spec.window_tokens
    settings = GenerationSettings(seconds=n / 25, steps=1, seed=3, temperature=0.8, top_k=50)
    streamed = [t for ch in StreamingGenerator(backend, backend.spec).stream(PREFIX, settings) for t in ch.tokens]
    sampled = probe.sample_window(model.lm, torch.tensor(PREFIX), n, 0.8, 50, seed=3)
    assert sampled.tolist() == streamed[:n]
    assert not torch.equal(sampled, probe.sample_window(model.lm, torch.tensor(PREFIX), n, 0.8, 50, seed=4))


class _PromptLM(torch.nn.Module):
    """Puts all first-token probability on token 0 for prompts starting with code 0, else on token 1."""

    def prefix_ids(self, codes: torch.Tensor) -> torch.Tensor:
        return codes

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.full((ids.shape[0], ids.shape[1], 2), -50.0)
        logits[:, -1, 0] = torch.where(ids[:, 0] == 0, 50.0, -50.0)
        logits[:, -1, 1] = torch.where(ids[:, 0] == 0, -50.0, 50.0)
        return logits


def test_prompt_only_key_reads_the_first_token_distribution_through_the_table():
    c_major = torch.tensor([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
    table = torch.stack([c_major, c_major.roll(7)])  # token 0 sounds like C major, token 1 like G major
    codes = torch.tensor([[0, 0], [1, 0]])
    facts = [{"tonic_pc": 0, "mode": "major"}, {"tonic_pc": 7, "mode": "major"}]
    out = probe.prompt_only_key(_PromptLM(), codes, codes.roll(1, 0), table, facts)
    assert out["own_caption"]["key"] == 1.0
    assert out["shuffled_caption"]["key"] == 0.0


def test_guided_sampling_is_the_plain_draw_when_the_null_prompt_is_the_prompt_and_differs_otherwise():
    import copy

    model = build_model(preset("tiny"), seed=0)
    lm, null_lm, n = model.lm, copy.deepcopy(model.lm), 40
    codes = torch.tensor(PREFIX)
    plain = probe.sample_window(lm, codes, n, 1.0, 0, seed=2)
    same = probe.sample_window(lm, codes, n, 1.0, 0, seed=2, guidance=3.0, null_lm=null_lm, null_codes=codes)
    assert torch.equal(plain, same)  # u + s (c - u) = c when both branches see the same prompt
    other = torch.tensor([7] * 12)
    guided = probe.sample_window(lm, codes, n, 1.0, 0, seed=2, guidance=3.0, null_lm=null_lm, null_codes=other)
    assert not torch.equal(plain, guided)
    with pytest.raises(ValueError, match="null_lm"):
        probe.sample_window(lm, codes, n, 1.0, 0, seed=2, guidance=3.0)
