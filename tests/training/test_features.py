import pytest
import torch

from melody_edge.training.features import fit_token_prior


def test_token_prior_recovers_token_statistics_and_shrinks_rare_tokens():
    gen = torch.Generator().manual_seed(0)
    vocab, fpt, channels = 8, 10, 3
    true_mean = torch.randn(vocab, channels, generator=gen) * 3
    latents, tokens = [], []
    for _ in range(20):
        tok = torch.randint(6, (50,), generator=gen)  # tokens 6 and 7 never occur
        tok[0] = 5 if len(tokens) == 0 else tok[0]
        frames = true_mean[tok].repeat_interleave(fpt, 0).T + 0.5 * torch.randn(channels, 50 * fpt, generator=gen)
        latents.append(torch.cat([frames, torch.zeros(channels, 7)], 1))  # a partial token at the end is ignored
        tokens.append(tok)
    mean, var = fit_token_prior(latents, tokens, vocab, fpt, shrink=1e-3)
    assert mean.shape == var.shape == (vocab + 1, channels)
    assert torch.allclose(mean[:5], true_mean[:5], atol=0.1)
    assert torch.allclose(var[:5], torch.full((5, channels), 0.25), rtol=0.15)
    everything = torch.cat([z[:, : 50 * fpt] for z in latents], 1)
    # Unseen tokens and the null row get the global statistics.
    assert torch.allclose(mean[6], everything.mean(1), atol=1e-4) and torch.allclose(mean[-1], mean[6])
    assert torch.allclose(var[-1], everything.var(1, correction=0), rtol=1e-3)
    # With heavy shrinkage even seen tokens move toward the global mean.
    shrunk, _ = fit_token_prior(latents, tokens, vocab, fpt, shrink=1e6)
    assert torch.allclose(shrunk[:5], mean[-1].expand(5, -1), atol=0.05)


def test_token_prior_needs_latents():
    with pytest.raises(ValueError, match="no training latents"):
        fit_token_prior([], [], 8, 10)
    with pytest.raises(ValueError, match="shrink must be > 0"):
        fit_token_prior([torch.zeros(2, 10)], [torch.zeros(1, dtype=torch.long)], 8, 10, shrink=0.0)
