"""The committed demo checkpoint: loads, matches its config, generates finite audio, fits the size budget."""

from __future__ import annotations

import numpy as np
import pytest

from melody_edge.default_model import DEFAULT_CHECKPOINT, default_checkpoint, resolve_source
from melody_edge.models.melody import MeLoDy, preset
from melody_edge.runtime.eager import EagerBackend
from melody_edge.runtime.pipeline import GenerationSettings, generate


@pytest.fixture(scope="module")
def demo_model() -> MeLoDy:
    return MeLoDy.load(default_checkpoint())


def test_checkpoint_is_the_demo_config_and_small(demo_model):
    # The preset plus what training added: guidance on the LM against the generic prompt's codes
    # (a trained conditioner's, so no preset can hold them).
    c = demo_model.config
    assert c.lm_guidance_scale == 3.0 and len(c.lm_null_codes) == c.lm.prefix_levels
    assert c.replace(lm_guidance_scale=1.0, lm_null_codes=()) == preset("demo")
    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.rglob("*") if p.is_file())
    assert size <= 50 * 2**20, f"{size / 2**20:.1f} MiB exceeds the 50 MB budget"


def test_checkpoint_generates_finite_music_like_audio(demo_model):
    backend = EagerBackend(demo_model)
    codes = demo_model.conditioner.parse_tokens("1,2,3,4,5,6,7,8,9,10,11,12")[0].tolist()
    audio = generate(backend, backend.spec, codes, GenerationSettings(seconds=2.5, steps=demo_model.config.steps))
    assert audio.shape == (60000,) and np.isfinite(audio).all()
    assert 1e-4 < float(np.sqrt(np.mean(audio**2))) < 1.0  # neither silence nor runaway amplitude


def test_trained_weights_differ_from_a_fresh_init(demo_model):
    from melody_edge.models.melody import build_model

    fresh = build_model(preset("demo"))
    for name in ("lm", "dpd", "vae", "conditioner", "tokenizer"):
        trained = dict(getattr(demo_model, name).state_dict())
        init = getattr(fresh, name).state_dict()
        changed = [
            k for k, v in init.items() if v.is_floating_point() and not np.allclose(trained[k].numpy(), v.numpy())
        ]
        assert changed, f"{name}: every tensor equals a fresh initialisation"


def test_commands_default_to_the_checkpoint():
    assert resolve_source(None, None) == (None, DEFAULT_CHECKPOINT)
    assert resolve_source(None, "tiny") == ("tiny", None)
