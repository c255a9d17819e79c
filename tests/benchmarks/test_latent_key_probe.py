from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "latent_key_probe", Path(__file__).parents[2] / "benchmarks" / "latent_key_probe.py"
)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_token_exemplars_copy_one_real_occurrence_per_token_and_zero_for_unseen():
    f, channels = 3, 2
    latents = [torch.arange(channels * 4 * f, dtype=torch.float32).view(channels, 4 * f) + 100 * i for i in range(2)]
    tokens = [torch.tensor([0, 1, 0, 2]), torch.tensor([2, 2, 1, 0])]
    table = probe.token_exemplars(latents, tokens, vocab=4, frames_per_token=f, seed=0)
    assert table.shape == (5, channels, f)
    for tok_id in range(3):
        spans = [
            z[:, p * f : (p + 1) * f] for z, t in zip(latents, tokens, strict=True) for p in range(4) if t[p] == tok_id
        ]
        assert any(torch.equal(table[tok_id], s) for s in spans)
    assert not table[3].any() and not table[4].any()  # token 3 never occurs; the null row stays zero
    assert torch.equal(table, probe.token_exemplars(latents, tokens, vocab=4, frames_per_token=f, seed=0))
