import math

import pytest
import torch

from melody_edge.models.checkpoint import load_component, save_component
from melody_edge.models.config import ConfigError
from melody_edge.models.semantic_tokenizer import (
    TOKENIZER_PRESETS,
    KMeansSemanticTokenizer,
    KMeansTokenizerConfig,
    SemanticTokenizer,
    hz_to_mel,
    kmeans,
    mel_filterbank,
    mel_to_hz,
    nearest_centroid,
)

SR = 24000


def sine(freq: float, seconds: float, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    return (amp * torch.sin(2 * math.pi * freq * t)).float().unsqueeze(0)


@pytest.fixture
def tok():
    torch.manual_seed(0)
    return KMeansSemanticTokenizer(TOKENIZER_PRESETS["tiny"])


@pytest.mark.parametrize("n", [0, 959, 960, 1919, 24000, 24000 + 500, 3 * 24000 + 959])
def test_token_count_is_samples_floor_hop(tok, n):
    audio = 0.1 * torch.randn(2, n, generator=torch.Generator().manual_seed(n))
    tokens = tok.tokenize(audio)
    assert tokens.shape == (2, n // 960)
    assert tokens.dtype == torch.long
    if tokens.numel():
        assert int(tokens.min()) >= 0 and int(tokens.max()) < 1024
    assert tok.features(audio).shape == (2, n // 960, 64)


def test_protocol_and_rates(tok):
    assert isinstance(tok, SemanticTokenizer)
    assert tok.token_rate == 25.0 and tok.vocab_size == 1024 and tok.hop_length == 960
    for cfg in TOKENIZER_PRESETS.values():
        assert cfg.vocab_size == 1024 and cfg.hop_length == 960 and cfg.sample_rate == SR


def test_tokenize_rejects_bad_audio(tok):
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        tok.tokenize(torch.zeros(960))
    with pytest.raises(ValueError, match="floating point"):
        tok.tokenize(torch.zeros(1, 960, dtype=torch.long))


def test_fit_is_deterministic_for_a_seed():
    feats = torch.randn(1500, 64, generator=torch.Generator().manual_seed(1)) * 3 + 1  # N > vocab: k-means++ path
    a = KMeansSemanticTokenizer(TOKENIZER_PRESETS["tiny"])
    b = KMeansSemanticTokenizer(TOKENIZER_PRESETS["tiny"])
    c = KMeansSemanticTokenizer(TOKENIZER_PRESETS["tiny"])
    a.fit(feats, iters=3, seed=7)
    b.fit(feats, iters=3, seed=7)
    c.fit(feats, iters=3, seed=8)
    assert torch.equal(a.centroids, b.centroids)
    assert torch.equal(a.feature_mean, b.feature_mean) and torch.equal(a.feature_std, b.feature_std)
    assert not torch.equal(a.centroids, c.centroids)
    torch.testing.assert_close(a.feature_mean, feats.mean(0))


@pytest.mark.parametrize("vocab", [1024, 8])  # 1024 > frames: one centroid per frame; 8: real clustering
def test_sines_an_octave_apart_get_different_tokens(vocab):
    tok = KMeansSemanticTokenizer(TOKENIZER_PRESETS["tiny"].replace(vocab_size=vocab))
    low, high = sine(440, 2.0), sine(880, 2.0)
    history = tok.fit([low, high], iters=10, seed=0)
    assert history[-1] <= history[0]
    t_low, t_high = tok.tokenize(low), tok.tokenize(high)
    assert t_low.shape == t_high.shape == (1, 50)
    # With 8 clusters the two clip edges (a delta spike from the reflect padding, which standardisation
    # magnifies because steady tones have almost no delta variance) may share a cluster; the tones may not.
    keep = slice(None) if vocab > 100 else slice(2, -2)
    assert not set(t_low[0, keep].tolist()) & set(t_high[0, keep].tolist())
    if vocab < 100:  # a steady tone is one cluster
        assert t_low[0, 2:-2].unique().numel() == 1 and t_high[0, 2:-2].unique().numel() == 1


def test_features_see_pitch_and_loudness(tok):
    # The log-mel part peaks in a higher band for the higher pitch, and a 20 dB quieter copy is 2 ln 10 lower.
    f_low, f_high = tok.features(sine(440, 1.0)), tok.features(sine(880, 1.0))
    assert int(f_high[0, 10, :32].argmax()) > int(f_low[0, 10, :32].argmax())
    quiet = tok.features(sine(440, 1.0, amp=0.05))
    peak = int(f_low[0, 10, :32].argmax())
    assert float(f_low[0, 10, peak] - quiet[0, 10, peak]) == pytest.approx(2 * math.log(10), abs=1e-2)
    # A steady tone has (almost) no delta in its band away from the edges (far bands hold only leakage).
    assert float(f_low[0, 2:-2, 32 + peak].abs().max()) < 1e-2


def test_save_load_is_bit_exact(tmp_path, tok):
    tok.fit([sine(440, 1.0), sine(660, 1.0), 0.1 * torch.randn(1, SR, generator=torch.Generator().manual_seed(3))])
    cfg = tok.config
    save_component(tmp_path / "tokenizer", cfg, tok)
    cfg2, tok2 = load_component(tmp_path / "tokenizer", KMeansTokenizerConfig, KMeansSemanticTokenizer)
    assert cfg2 == cfg
    for name, tensor in tok.state_dict().items():
        assert torch.equal(tensor, tok2.state_dict()[name]), name
    audio = 0.3 * torch.randn(3, 2 * SR, generator=torch.Generator().manual_seed(4))
    assert torch.equal(tok.tokenize(audio), tok2.tokenize(audio))


def test_fit_rejects_empty_or_malformed_input(tok):
    with pytest.raises(ValueError, match="no frames"):
        tok.fit([torch.zeros(1, 100)])
    with pytest.raises(ValueError, match="raw features"):
        tok.fit(torch.zeros(10, 3))


def test_kmeans_finds_separated_blobs_and_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 16, generator=gen) * 20
    labels = torch.arange(8).repeat_interleave(100)
    x = centres[labels] + torch.randn(800, 16, generator=gen)
    c1, hist = kmeans(x, 8, iters=20, seed=1)
    c2, _ = kmeans(x, 8, iters=20, seed=1)
    assert torch.equal(c1, c2)
    assert hist[-1] < hist[0] and float(hist[-1]) == pytest.approx(16.0, rel=0.15)  # only the unit noise is left
    idx, _ = nearest_centroid(x, c1)
    for blob in range(8):  # each blob lands in exactly one cluster, and no two blobs share one
        assert idx[labels == blob].unique().numel() == 1
    assert idx.unique().numel() == 8


def test_kmeans_with_fewer_points_than_centroids():
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    c, hist = kmeans(x, 32, iters=5, seed=0)
    assert c.shape == (32, 4) and bool(torch.isfinite(c).all())
    assert float(hist[-1]) < 1e-6  # every point has a centroid on top of it


def test_nearest_centroid_matches_brute_force_across_blocks(monkeypatch):
    import melody_edge.models.semantic_tokenizer as st

    monkeypatch.setattr(st, "_MAX_DIST_ELEMENTS", 7 * 13)  # force several row blocks
    gen = torch.Generator().manual_seed(0)
    x, c = torch.randn(50, 6, generator=gen), torch.randn(13, 6, generator=gen)
    idx, dist = nearest_centroid(x, c)
    full = torch.cdist(x, c).pow(2)
    assert torch.equal(idx, full.argmin(1))
    torch.testing.assert_close(dist, full.min(1).values, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_scale_round_trip_and_reference_points(scale):
    hz = torch.tensor([0.0, 200.0, 999.0, 1000.0, 4000.0, 12000.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(hz, scale), scale), hz)
    mel_1k = float(hz_to_mel(torch.tensor(1000.0, dtype=torch.float64), scale))
    assert mel_1k == pytest.approx(1000.0 if scale == "htk" else 15.0, abs=0.05)


def test_htk_filters_are_unit_triangles_that_tile_the_spectrum():
    fb = mel_filterbank(1024, 40, SR, 0.0, 12000.0, "htk")
    assert fb.shape == (513, 40)
    assert float(fb.min()) >= 0 and float(fb.max()) <= 1 + 1e-6
    freqs = torch.linspace(0, SR / 2, 513)
    edges = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(12000.0))), 42))
    inside = (freqs >= edges[1]) & (freqs <= edges[-2])
    torch.testing.assert_close(fb[inside].sum(1), torch.ones(int(inside.sum())), atol=1e-5, rtol=0)
    slaney = mel_filterbank(1024, 40, SR, 0.0, 12000.0, "slaney")
    assert bool((slaney.sum(0) > 0).all())


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("sample_rate", {"sample_rate": 0}),
        ("token_rate", {"token_rate": 7}),
        ("frames_per_token", {"frames_per_token": 7}),
        ("n_fft", {"n_fft": 4096}),
        ("n_fft", {"n_fft": 100}),
        ("n_mels", {"n_fft": 512, "n_mels": 200}),
        ("mel_scale", {"mel_scale": "bark"}),
        ("f_max", {"f_max": 20000.0}),
        ("f_min", {"f_min": 13000.0}),
        ("vocab_size", {"vocab_size": 1}),
    ],
)
def test_bad_config_names_the_field(field, changes):
    with pytest.raises(ConfigError) as info:
        KMeansTokenizerConfig(**changes)
    assert str(info.value).startswith(f"{field}:")


def test_config_json_round_trip_and_type_errors():
    cfg = TOKENIZER_PRESETS["paper"]
    assert KMeansTokenizerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="n_mels"):
        KMeansTokenizerConfig.from_dict({"n_mels": "64"})


def _harmonic_tone(hz: float, amp: float, seconds: float = 0.5, sr: int = 24000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return amp * sum(g * torch.sin(2 * math.pi * k * hz * t) for k, g in ((1, 1.0), (2, 0.5), (3, 0.3)))


def test_chroma_block_names_the_pitch_class_and_sums_to_one():
    tok = KMeansSemanticTokenizer(TOKENIZER_PRESETS["demo"])
    assert tok.config.feature_dim == 2 * tok.config.n_mels + 12
    for hz, pc in ((261.63, 0), (440.0, 9), (123.47, 11)):  # C4, A4, B2
        block = tok.features(_harmonic_tone(hz, 0.3)[None])[0, 2:-2, -12:]
        assert (block.argmax(-1) == pc).all()
        assert torch.allclose(block.square().sum(-1), torch.ones(block.shape[0]), atol=1e-5)
    assert tok.features(torch.zeros(1, 959)).shape == (1, 0, 140)
    assert tok.features(torch.randn(1, 960)).shape == (1, 1, 140)  # one token: chroma frame zero-padded


def test_chroma_weight_makes_pitch_not_loudness_decide_the_token():
    """Harmonic tones of 12 pitch classes at 3 loudnesses, 12 codes: log-mel alone groups them by loudness (its
    bands are wider than a semitone at 130-250 Hz); a weighted chroma block groups them by pitch."""
    amps = (0.5, 0.1, 0.02)
    clips = {(p, a): _harmonic_tone(130.81 * 2 ** (p / 12), a) for p in range(12) for a in amps}

    def grouping(weight: float) -> tuple[int, int]:
        tok = KMeansSemanticTokenizer(TOKENIZER_PRESETS["demo"].replace(chroma_weight=weight, vocab_size=12))
        tok.fit(list(clips.values()), seed=0)
        std = tok.standardize(torch.cat([tok.features(c[None])[0] for c in clips.values()])).std(0)
        if weight:  # fit folds the weight into the stored std: standardised chroma spreads `weight` times wider
            assert torch.allclose(std[-12:].mean(), torch.tensor(weight), rtol=0.05)
        code = {k: int(tok.tokenize(c[None])[0][3:-3].mode().values) for k, c in clips.items()}
        same_pitch = sum(len({code[(p, a)] for a in amps}) == 1 for p in range(12))
        return same_pitch, len({code[(p, amps[0])] for p in range(12)})

    grouped, distinct = grouping(10.0)
    assert grouped == 12 and distinct >= 10
    assert grouping(0.0)[0] < 6


@pytest.mark.parametrize("changes", [{"chroma_weight": -1.0}, {"chroma_weight": 1.0, "chroma_n_fft": 1024}])
def test_bad_chroma_config_names_the_field(changes):
    with pytest.raises(ConfigError, match=list(changes)[-1]):  # the field the last change breaks
        KMeansTokenizerConfig(**changes)
