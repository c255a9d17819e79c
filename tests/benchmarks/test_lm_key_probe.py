from __future__ import annotations

import importlib.util
from pathlib import Path

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


def test_guided_runtime_draws_what_the_probe_draws_and_guidance_changes_the_tokens(null_codes):
    from melody_edge.models.melody import with_lm_guidance

    model = with_lm_guidance(build_model(preset("tiny"), seed=0), 3.0, null_codes)
    backend = EagerBackend(model)
    n = backend.spec.window_tokens
    settings = GenerationSettings(seconds=n / 25, steps=1, seed=2)
    streamed = [t for ch in StreamingGenerator(backend, backend.spec).stream(PREFIX, settings) for t in ch.tokens]
    guided = probe.sample_window(model.streaming_lm(), torch.tensor(PREFIX), n, 1.0, 0, seed=2)
    assert guided.tolist() == streamed[:n]
    plain = probe.sample_window(model.lm, torch.tensor(PREFIX), n, 1.0, 0, seed=2)
    assert not torch.equal(plain, guided)
    # u + s (c - u) = c when the unconditional branch reads the prompt itself.
    same = with_lm_guidance(model, 3.0, PREFIX).streaming_lm()
    assert torch.equal(probe.sample_window(same, torch.tensor(PREFIX), n, 1.0, 0, seed=2), plain)
