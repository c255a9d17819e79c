"""Shared fixtures: tiny models built by the project itself (no downloads)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

# Under pytest-xdist two workers share the 2 cores: one thread each, so they do not oversubscribe.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


# Fixed conditioning tokens for bundles built in tests (the text-encoder path has its own tests).
TEST_PRESETS = [
    {"name": "test", "prompt": "a test tune", "tokens": [5, 17, 301, 2, 999, 64, 128, 7, 450, 12, 1000, 33]},
]


# The generic prompt's codes of a guided tiny model (a trained checkpoint takes them from its conditioner).
TEST_NULL_CODES = (3, 900, 41, 7, 512, 0, 77, 1023, 250, 9, 600, 18)


@pytest.fixture(scope="session")
def null_codes() -> tuple[int, ...]:
    return TEST_NULL_CODES


@pytest.fixture(scope="session")
def tiny_model():
    from melody_edge.models.melody import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def bundle_factory(tiny_model, tmp_path_factory, worker_id):
    """``make(target, recipe, **options)`` -> path of a tiny bundle, exported once per test run and option set.

    Bundles are expensive (an XNNPACK export takes tens of seconds on 2 cores), so tests share them,
    across pytest-xdist workers too: the first worker to need a bundle exports it under a file lock
    into the run's shared temp dir, the others wait and reuse it (the export renames a finished bundle
    into place, so a bundle that exists is complete). Tests must not modify a shared bundle (copy it first).
    """
    from filelock import FileLock

    from melody_edge.export.bundle import export_bundle
    from melody_edge.models.melody import with_lm_guidance
    from melody_edge.quantization.recipes import load_recipe

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker_id != "master" else base) / "shared-bundles"
    root.mkdir(parents=True, exist_ok=True)

    def make(target: str, recipe: str, **options) -> object:
        """``lm_guidance=S``: the tiny model with LM guidance S against TEST_NULL_CODES."""
        options = {"steps": 2, "sampler_artifact": False, "model_source": {"config": "tiny", "seed": 0}, **options}
        digest = hashlib.sha256(json.dumps([target, recipe, options], sort_keys=True).encode()).hexdigest()[:12]
        out = root / f"{target}-{recipe}-{digest}"
        scale = options.pop("lm_guidance", None)
        model = tiny_model if scale is None else with_lm_guidance(tiny_model, scale, TEST_NULL_CODES)
        with FileLock(str(out) + ".lock"):
            if not out.exists():
                export_bundle(
                    model,
                    target,
                    load_recipe(target, recipe),
                    out,
                    presets=TEST_PRESETS,
                    log=lambda _: None,
                    **options,
                )
        return out

    return make


@pytest.fixture(scope="session")
def tiny_audio_encoder(tmp_path_factory):
    from tiny_audio_encoder import save_tiny_audio_encoder

    return save_tiny_audio_encoder(tmp_path_factory.mktemp("tiny-audio-encoder"))
