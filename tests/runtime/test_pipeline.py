import math

import numpy as np
import pytest
import torch

from melody_edge.models.melody import build_model, preset
from melody_edge.runtime.eager import EagerBackend
from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator, generate

PREFIX = [*range(0, 1100, 100), 5]


@pytest.fixture(scope="module")
def tiny():
    return build_model(preset("tiny"), seed=0)


def run(model, seconds, seed=0, recorder=None, steps=3):
    backend = EagerBackend(model)
    gen = StreamingGenerator(backend, backend.spec, recorder)
    return list(gen.stream(PREFIX, GenerationSettings(seconds=seconds, steps=steps, seed=seed))), backend.spec


def test_stream_is_deterministic_for_a_seed_and_has_the_requested_length(tiny):
    backend = EagerBackend(tiny)
    settings = GenerationSettings(seconds=6.3, steps=2, seed=5)
    a = generate(backend, backend.spec, PREFIX, settings)
    b = generate(backend, backend.spec, PREFIX, settings)
    assert a.shape == (round(6.3 * 24000),) and np.isfinite(a).all()
    assert np.array_equal(a, b)
    c = generate(backend, backend.spec, PREFIX, GenerationSettings(seconds=6.3, steps=2, seed=6))
    assert not np.allclose(a, c)


@torch.no_grad()
def test_streamed_chunks_equal_the_offline_decode_across_continuation(tiny):
    chunks, spec = run(tiny, seconds=15.0)  # 6 chunks: the 4-chunk window slides twice
    latents = np.concatenate([ch.latents for ch in chunks], axis=1)
    assert latents.shape == (16, 6 * spec.chunk_frames)
    offline = tiny.vae.decode(torch.from_numpy(latents)[None])[0].numpy()
    streamed = np.concatenate([ch.audio for ch in chunks])
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() <= 1e-5 * max(np.abs(offline).max(), 1e-6)


def test_token_counts_per_chunk_alternate_and_fill_each_window(tiny):
    chunks, spec = run(tiny, seconds=15.0, steps=1)
    counts = [len(ch.tokens) for ch in chunks if ch.tokens]
    assert counts == [62, 63, 62, 63, 62, 63]
    assert sum(counts[:4]) == spec.window_tokens


def test_first_audio_needs_only_the_first_chunk(tiny):
    events = []
    run(tiny, seconds=10.0, recorder=lambda e, p: events.append((e, p)), steps=2)
    names = [e for e, _ in events]
    first_vae = names.index("vae_decode")
    # Before the first audio: one prefix prefill, 62 tokens (61 decodes + the pending one is not fed),
    # and exactly `steps` guided DPD calls.
    assert names[:first_vae].count("lm_prefill") == 1
    assert names[:first_vae].count("lm_decode") == 61
    assert names[:first_vae].count("dpd") == 2
    dpd0 = next(p for e, p in events if e == "dpd")
    spec = EagerBackend(tiny).spec
    # Future chunks: pure noise at pi/2 with null tokens; the unconditional half is all null.
    assert torch.all(dpd0["angles"][:, spec.chunk_frames :] == math.pi / 2)
    assert torch.all(dpd0["tokens"][0, 62:] == spec.null_token)
    assert torch.all(dpd0["tokens"][1] == spec.null_token)
    assert dpd0["z"].shape[0] == 2


def test_first_steps_shortens_only_the_first_chunks_denoise(tiny):
    backend = EagerBackend(tiny)
    runs = {}
    for first in (0, 1):
        events = []
        gen = StreamingGenerator(backend, backend.spec, lambda e, p, ev=events: ev.append(e))
        settings = GenerationSettings(seconds=6.0, steps=3, seed=2, first_steps=first)
        chunks = list(gen.stream(PREFIX, settings))
        vae = [i for i, e in enumerate(events) if e == "vae_decode"]
        # DPD calls before each chunk's audio: the first chunk's, then each later chunk's.
        per_chunk = [events[a:b].count("dpd") for a, b in zip([0, *vae], vae, strict=False)]
        runs[first] = (chunks, per_chunk)
    assert runs[0][1] == [3, 3, 3] and runs[1][1] == [1, 3, 3]
    # The LM draws from its own random stream: the same tokens either way; the audio differs.
    assert [c.tokens for c in runs[0][0]] == [c.tokens for c in runs[1][0]]
    assert not np.allclose(runs[0][0][0].audio, runs[1][0][0].audio)


def test_continuation_reprefills_kept_tokens_after_the_prefix(tiny):
    events = []
    run(tiny, seconds=12.5, recorder=lambda e, p: events.append((e, p)), steps=1)
    prefills = [p for e, p in events if e == "lm_prefill"]
    assert [p["start_pos"] for p in prefills] == [0, 12]
    assert prefills[1]["ids"].numel() == 250 - 62  # the window dropped chunk 0's 62 tokens


def test_bad_settings_are_rejected():
    bad = ({"seconds": 0}, {"seconds": float("nan")}, {"seconds": 1, "steps": 0}, {"seconds": 1, "seed": -1})
    for kwargs in (*bad, {"seconds": 1, "first_steps": -1}):
        with pytest.raises(ValueError):
            GenerationSettings(**kwargs)
