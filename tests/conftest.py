"""Shared fixtures: tiny models built by the project itself (no downloads)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


# Fixed conditioning tokens for bundles built in tests (the text-encoder path has its own tests).
TEST_PRESETS = [
    {"name": "test", "prompt": "a test tune", "tokens": [5, 17, 301, 2, 999, 64, 128, 7, 450, 12, 1000, 33]},
]


@pytest.fixture(scope="session")
def tiny_model():
    from melody_edge.models.melody import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def bundle_factory(tiny_model, tmp_path_factory):
    """``make(target, recipe, **options)`` -> path of a tiny bundle, exported once per session and option set.

    Bundles are expensive (an XNNPACK export takes tens of seconds on 2 cores), so tests share them;
    tests must not modify a shared bundle (copy it first).
    """
    from melody_edge.export.bundle import export_bundle
    from melody_edge.quantization.recipes import load_recipe

    cache: dict = {}
    root = tmp_path_factory.mktemp("bundles")

    def make(target: str, recipe: str, **options) -> object:
        key = (target, recipe, tuple(sorted(options.items())))
        if key not in cache:
            options = {"steps": 2, "sampler_artifact": False, "model_source": {"config": "tiny", "seed": 0}, **options}
            out = root / f"{target}-{recipe}-{len(cache)}"
            export_bundle(
                tiny_model,
                target,
                load_recipe(target, recipe),
                out,
                presets=TEST_PRESETS,
                log=lambda _: None,
                **options,
            )
            cache[key] = out
        return cache[key]

    return make
