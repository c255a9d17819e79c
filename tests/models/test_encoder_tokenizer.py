"""A learned-encoder semantic tokenizer (MERT-style), tested on a tiny wav2vec 2.0 the tests build."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from tiny_audio_encoder import save_tiny_audio_encoder

from melody_edge.models.checkpoint import CheckpointError
from melody_edge.models.config import ConfigError
from melody_edge.models.encoder_tokenizer import (
    AudioEncoderUnavailable,
    EncoderSemanticTokenizer,
    EncoderTokenizerConfig,
    encoder_tokenizer_config,
    resample,
)
from melody_edge.models.melody import MeLoDy, MelodyConfig, build_model, preset, with_tokenizer
from melody_edge.models.semantic_tokenizer import KMeansTokenizerConfig, SemanticTokenizer


def tone(freq: float, seconds: float, rate: int) -> torch.Tensor:
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    return torch.sin(2 * math.pi * freq * t)[None]


@pytest.mark.parametrize(("orig", "new"), [(24000, 16000), (16000, 24000), (24000, 44100)])
def test_resample_keeps_a_tone_and_gives_the_expected_length(orig, new):
    x = tone(1000.0, 0.5, orig)
    y = resample(x, orig, new)
    assert y.shape == (1, math.ceil(x.shape[1] * new / orig))
    ref = tone(1000.0, 0.5, new)[:, : y.shape[1]]
    edge = new // 50  # the filter sees zeros past the ends
    assert float((y - ref)[:, edge:-edge].abs().max()) < 2e-3
    assert resample(x, orig, orig) is x


def test_resample_removes_what_the_new_rate_cannot_hold():
    x = tone(10000.0, 0.5, 24000)  # above 16 kHz's Nyquist frequency: must not alias down to 6 kHz
    y = resample(x, 24000, 16000)
    assert float(y[:, 400:-400].abs().max()) < 0.01


def test_config_reads_rates_and_width_from_the_encoder(tiny_audio_encoder):
    cfg = encoder_tokenizer_config(tiny_audio_encoder, layer=2, vocab_size=16)
    assert (cfg.feature_dim, cfg.encoder_sample_rate, cfg.encoder_frame_rate) == (32, 16000, 50)
    assert cfg.frames_per_token == 2 and cfg.hop_length == 960 and len(cfg.encoder_sha256) == 64
    assert isinstance(EncoderSemanticTokenizer(cfg), SemanticTokenizer)
    with pytest.raises(ValueError, match=r"hidden states 0 \.\. 2"):
        encoder_tokenizer_config(tiny_audio_encoder, layer=3)
    with pytest.raises(ConfigError, match="encoder_frame_rate"):
        cfg.replace(encoder_frame_rate=60)


@torch.no_grad()
def test_features_are_the_chosen_layer_averaged_to_the_token_rate(tiny_audio_encoder):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    cfg = encoder_tokenizer_config(tiny_audio_encoder, layer=1, vocab_size=16)
    tok = EncoderSemanticTokenizer(cfg)
    audio = torch.randn(2, 3 * 960 + 500, generator=torch.Generator().manual_seed(0)) * 0.1
    feats = tok.features(audio)
    assert feats.shape == (2, 3, 32)  # the trailing partial token is dropped
    # By hand: resample the whole tokens, run the model, average pairs of 50 Hz frames.
    model = Wav2Vec2Model.from_pretrained(str(tiny_audio_encoder)).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(tiny_audio_encoder))
    x = resample(audio[:, : 3 * 960], 24000, 16000)
    inputs = extractor(list(x.numpy()), sampling_rate=16000, return_tensors="pt")
    h = model(**inputs, output_hidden_states=True).hidden_states[1]
    assert h.shape[1] == 5  # 0.12 s at 50 Hz gives 5 frames, not 6: the last one is repeated
    h = torch.cat([h, h[:, -1:]], dim=1)
    assert torch.allclose(feats, h.reshape(2, 3, 2, 32).mean(2), atol=1e-6)
    assert tok.features(audio[:, :900]).shape == (2, 0, 32)
    assert tok.tokenize(audio[:, :900]).shape == (2, 0)


def encoder_melody_config(encoder_dir) -> MelodyConfig:
    return with_tokenizer(preset("tiny"), encoder_tokenizer_config(encoder_dir, layer=2))


def test_a_checkpoint_with_an_encoder_tokenizer_round_trips(tiny_audio_encoder, tmp_path, monkeypatch):
    cfg = encoder_melody_config(tiny_audio_encoder)
    assert cfg.dpd.token_feature_dim == 32  # the DPD embeds the new tokenizer's centroids
    model = build_model(cfg)
    clips = [torch.randn(1, 24000 * 4, generator=torch.Generator().manual_seed(i)) * 0.1 for i in range(3)]
    history = model.tokenizer.fit(clips, iters=5, seed=0)
    assert history[-1] <= history[0]
    model.dpd.set_token_features(model.tokenizer.centroids)
    tokens = model.tokenizer.tokenize(clips[0])
    assert tokens.shape == (1, 100) and int(tokens.max()) < 1024
    model.save(tmp_path / "ckpt")
    raw = json.loads((tmp_path / "ckpt" / "melody.json").read_text())
    assert raw["tokenizer"]["kind"] == "encoder"
    loaded = MeLoDy.load(tmp_path / "ckpt")
    assert isinstance(loaded.tokenizer, EncoderSemanticTokenizer) and loaded.config == cfg
    assert torch.equal(loaded.tokenizer.tokenize(clips[0]), tokens)

    # The encoder is needed only to tokenize audio: without it the checkpoint loads (export, generation),
    # and tokenizing names the directory and the fix.
    moved = tmp_path / "moved-encoder"
    shutil.copytree(tiny_audio_encoder, moved)
    cfg2 = with_tokenizer(preset("tiny"), encoder_tokenizer_config(moved, layer=2))
    build_model(cfg2).save(tmp_path / "ckpt2")
    shutil.rmtree(moved)
    orphan = MeLoDy.load(tmp_path / "ckpt2")
    with pytest.raises(AudioEncoderUnavailable, match=f"{moved}.*MELODY_AUDIO_ENCODER.*--encoder"):
        orphan.tokenizer.tokenize(clips[0])
    # The same encoder found elsewhere (its sha256 matches) through $MELODY_AUDIO_ENCODER.
    monkeypatch.setenv("MELODY_AUDIO_ENCODER", str(tiny_audio_encoder))
    assert orphan.tokenizer.tokenize(clips[0]).shape == (1, 100)


def test_another_encoder_in_the_same_directory_is_refused(tiny_audio_encoder, tmp_path):
    d = tmp_path / "encoder"
    shutil.copytree(tiny_audio_encoder, d)
    tok = EncoderSemanticTokenizer(encoder_tokenizer_config(d, layer=1, vocab_size=16))
    save_tiny_audio_encoder(d, seed=1)  # same architecture, other weights
    with pytest.raises(AudioEncoderUnavailable, match=r"other weights.*refit the tokenizer"):
        tok.tokenize(torch.zeros(1, 960))


def test_melody_json_reads_the_tokenizer_by_kind(tiny_audio_encoder):
    cfg = encoder_melody_config(tiny_audio_encoder)
    data = cfg.to_dict()
    assert MelodyConfig.from_dict(data) == cfg
    kmeans = preset("tiny").to_dict()
    del kmeans["tokenizer"]["kind"]  # files written before tokenizers had kinds
    assert isinstance(MelodyConfig.from_dict(kmeans).tokenizer, KMeansTokenizerConfig)
    data["tokenizer"]["kind"] = "mert"
    with pytest.raises(ConfigError, match=r"tokenizer\.kind: unknown kind 'mert'; choose one of encoder, kmeans"):
        MelodyConfig.from_dict(data)
    with pytest.raises(ConfigError, match="kind"):
        EncoderTokenizerConfig(encoder_dir="x", layer=1, feature_dim=4, kind="kmeans")


def test_a_tokenizer_directory_of_unknown_kind_is_named(tmp_path):
    build_model(preset("tiny")).save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "tokenizer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "kind": "mert"}))
    with pytest.raises(CheckpointError, match=r"tokenizer/config\.json: tokenizer\.kind: unknown kind 'mert'"):
        MeLoDy.load(tmp_path / "ckpt")
