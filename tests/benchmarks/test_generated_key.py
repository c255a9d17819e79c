from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from melody_edge.models.melody import build_model, preset, with_lm_guidance

_spec = importlib.util.spec_from_file_location(
    "generated_key", Path(__file__).parents[2] / "benchmarks" / "generated_key.py"
)
generated_key = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generated_key)

C_MAJOR = torch.tensor([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])


def test_stream_keys_reads_every_caption_and_seed_at_the_requested_lm_guidance(null_codes):
    model = with_lm_guidance(build_model(preset("tiny"), seed=0), 3.0, null_codes)
    table = C_MAJOR.repeat(model.config.lm.vocab_size, 1)  # every token sounds like C major
    codes = [[i * 7 % 1024 for i in range(12)], [5] * 12]
    facts = [{"tonic_pc": 0, "mode": "major"}, {"tonic_pc": 7, "mode": "major"}]
    logs = []
    row = generated_key.stream_keys(
        model, codes, facts, table, 3.0, seeds=2, seconds=1.0, temperature=1.0, top_k=0, log=logs.append
    )
    assert row["samples"] == 4 and len(logs) == 4 and row["lm_guidance"] == 3.0
    # The tokens' key is read through the table: the C major captions hit, the G major ones miss.
    assert row["lm_tokens"]["key"] == 0.5 and row["lm_tokens"]["hits"] == 2
    assert 0.0 <= row["audio"]["key"] <= 1.0
    # Stream by stream, seed-major: caption 1 (C major) hits through the table, caption 2 (G major) misses.
    assert [t for _, t in row["streams"]] == [1, 0, 1, 0]
    assert sum(a for a, _ in row["streams"]) == row["audio"]["hits"]


def test_real_token_keys_render_each_clip_from_its_own_tokens():
    model = build_model(preset("tiny"), seed=0).eval()
    table = C_MAJOR.repeat(model.config.lm.vocab_size, 1)
    sr = model.config.sample_rate
    t = torch.arange(10 * sr) / sr  # one DPD window
    audio = [0.3 * torch.sin(2 * torch.pi * 261.63 * t), 0.3 * torch.sin(2 * torch.pi * 392.0 * t)]
    facts = [{"tonic_pc": 0, "mode": "major"}, {"tonic_pc": 7, "mode": "major"}]
    logs = []
    row = generated_key.real_token_keys(model, audio, facts, table, seeds=2, log=logs.append)
    assert row["samples"] == 4 and len(logs) == 4 and row["lm_guidance"] == "real tokens"
    assert row["lm_tokens"]["key"] == 0.5  # the table says C major for every token
    assert 0.0 <= row["audio"]["key"] <= 1.0


def test_stream_keys_samples_with_the_given_lm_and_dpd_sampler_settings(null_codes, monkeypatch):
    seen = []

    class Recording(generated_key.StreamingGenerator):
        def stream(self, prompt, settings):
            seen.append((settings.temperature, settings.top_k, settings.seed, settings.guidance_scale, settings.steps))
            return super().stream(prompt, settings)

    monkeypatch.setattr(generated_key, "StreamingGenerator", Recording)
    model = with_lm_guidance(build_model(preset("tiny"), seed=0), 3.0, null_codes)
    model = generated_key.with_dpd_sampler(model, guidance=4.0, steps=3)  # --dpd-guidance 4 --steps 3
    table = C_MAJOR.repeat(model.config.lm.vocab_size, 1)
    generated_key.stream_keys(
        model, [[1] * 12], [{"tonic_pc": 0, "mode": "major"}], table, 3.0, 2, 0.5, 0.8, 40, log=lambda _: None
    )
    assert seen == [(0.8, 40, 0, 4.0, 3), (0.8, 40, 1, 4.0, 3)]
    seen.clear()
    generated_key.stream_keys(
        model, [[1] * 12], [{"tonic_pc": 0, "mode": "major"}], table, 3.0, 2, 0.5, 0.8, 40, lambda _: None, first_seed=2
    )
    assert [s[2] for s in seen] == [2, 3]  # --first-seed 2 --seeds 2: fresh streams, not seeds 0 and 1 again
    assert generated_key.with_dpd_sampler(model).config.steps == 3  # None keeps what is there
