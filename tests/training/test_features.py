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


class _CountingTokenizer:
    """Tokens = the first samples' signs; counts how often it runs (a cache hit runs nothing)."""

    calls = 0

    def tokenize(self, audio):
        self.calls += 1
        return (audio[:, :4] > 0).long()


def _audio_set(tmp_path, name, captions):
    import numpy as np
    import soundfile as sf

    from melody_edge.training.data import AudioSet, Clip

    clips = []
    for i, caption in enumerate(captions):
        path = tmp_path / name / f"{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.random.default_rng(len(name) + i).uniform(-1, 1, 100).astype("float32"), 24000)
        clips.append(Clip(f"{i:06d}", path, caption, "train", {}))
    return AudioSet(clips, 24000)


def test_feature_cache_is_keyed_by_the_clips_not_only_the_weights(tmp_path):
    from melody_edge.training.features import semantic_tokens

    tok, cache = _CountingTokenizer(), tmp_path / "cache"
    first = _audio_set(tmp_path, "a", ["one", "two"])
    got = semantic_tokens(cache, "train", first, tok, "w")
    assert tok.calls == 2 and torch.equal(got[1], (first.audio[1][:4] > 0).long())
    assert torch.equal(semantic_tokens(cache, "train", first, tok, "w")[1], got[1]) and tok.calls == 2  # a hit
    # Another data set with the same clip ids (a rebuilt or different --data): computed again, not reused.
    other = _audio_set(tmp_path, "bb", ["three", "four"])
    messages = []
    again = semantic_tokens(cache, "train", other, tok, "w", messages.append)
    assert tok.calls == 4 and "other clips" in messages[0]
    assert torch.equal(again[0], (other.audio[0][:4] > 0).long())


def test_vae_latents_crop_to_the_hop_cache_before_the_gain_and_log_progress(tmp_path):
    from safetensors.torch import load_file

    from melody_edge.models.vae import VAE, VAE_PRESETS
    from melody_edge.training.features import vae_latents

    torch.manual_seed(0)
    vae = VAE(VAE_PRESETS["tiny"]).eval()
    audio = _audio_set(tmp_path, "a", [f"clip {i}" for i in range(20)])  # 100 samples each: not a multiple
    hop, gain = vae.hop_length, vae.config.latent_gain
    assert 100 % hop and gain != 1.0
    messages = []
    got = vae_latents(tmp_path / "cache", "train", audio, vae, "w", messages.append)
    with torch.no_grad():
        want = vae.latent(audio.audio[3][None, : 100 // hop * hop])[0]
    assert len(got) == 20 and torch.allclose(got[3], want, atol=1e-6)
    stored = load_file(str(tmp_path / "cache" / "latents-train-w.safetensors"))
    assert torch.allclose(stored["000003"] * gain, want, atol=1e-6)  # the cache holds them before the gain
    assert "train latents: 20/20 clips" in messages[-1]
