"""A checkpoint that guides its LM exports the guided LM program: same method shapes, batch-2 cache."""

from __future__ import annotations

import json

import pytest

from melody_edge.models.melody import with_lm_guidance
from melody_edge.runtime.bundle_generate import generate_from_bundle
from melody_edge.runtime.eager import EagerBackend
from melody_edge.runtime.manifest import BundleError, load_manifest
from melody_edge.runtime.open import open_bundle
from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator
from melody_edge.runtime.verify import reference_model

PROMPT = [5, 17, 301, 2, 999, 64, 128, 7, 450, 12, 1000, 33]


def _tokens(backend, seconds: float) -> list[int]:
    settings = GenerationSettings(seconds=seconds, steps=2, seed=1)
    return [t for ch in StreamingGenerator(backend, backend.spec).stream(PROMPT, settings) for t in ch.tokens]


@pytest.mark.parametrize("target", ["onnx", "executorch-xnnpack"])
def test_guided_lm_bundle_passes_gate_and_streams_the_eager_guided_tokens(
    bundle_factory, tiny_model, null_codes, target, tmp_path
):
    bundle = bundle_factory(target, "fp32", lm_guidance=3.0)
    manifest = load_manifest(bundle)
    report = json.loads((bundle / "parity.json").read_text())
    assert report["gate"]["passed"], report["gate"]["failures"]
    assert report["components"]["lm"]["float"]["greedy_match"] == 1.0
    assert manifest["sampler"]["lm_guidance_scale"] == 3.0
    assert manifest["sampler"]["lm_null_codes"] == list(null_codes)
    # The apps' contract is unchanged: the LM methods keep batch-1 inputs and outputs.
    decode = manifest["components"]["lm"]["methods"]["decode"]
    assert decode["inputs"][0]["shape"] == [1, 1] and decode["outputs"][0]["shape"][0] == 1
    if target == "onnx":
        cache = next(t for t in decode["inputs"] if t["name"] == "cache")
        assert cache["shape"][2] == 2  # [L, 2, B, H, S, Dh]: two rows, conditional and generic prompt

    # The reference rebuilt from the manifest guides the same way; the bundle streams its tokens.
    ref = reference_model(manifest)
    assert ref.config.lm_guidance_scale == 3.0
    seconds = 2 * ref.config.chunk_seconds
    backend, _ = open_bundle(bundle)
    streamed = _tokens(backend, seconds)
    assert streamed == _tokens(EagerBackend(ref), seconds)
    assert streamed != _tokens(EagerBackend(tiny_model), seconds)  # guidance changed what was drawn

    # The scale is fixed in the program: asking a bundle for another one names the fix.
    with pytest.raises(BundleError, match="--lm-cfg 1"):
        generate_from_bundle(bundle, prompt=None, tokens=None, seconds=1.0, out=tmp_path / "x.wav", lm_guidance=1.0)


def test_export_refuses_guidance_for_a_checkpoint_without_generic_prompt_codes(tiny_model):
    from melody_edge.models.config import ConfigError

    with pytest.raises(ConfigError, match="lm_null_codes"):
        with_lm_guidance(tiny_model, 3.0)
