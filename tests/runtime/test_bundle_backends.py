"""Every backend that runs on Linux streams from a tiny bundle exactly like the PyTorch reference."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest
import soundfile as sf
import torch

from melody_edge.runtime.bundle_generate import bundle_conditioning, generate_from_bundle
from melody_edge.runtime.manifest import BundleError
from melody_edge.runtime.open import BackendUnavailable, open_bundle
from melody_edge.runtime.verify import format_verify, frechet_distance, log_mel, snr_db, verify_bundle

LINUX_TARGETS = ["executorch-xnnpack", "onnx"]


@pytest.mark.parametrize("target", LINUX_TARGETS)
def test_three_streamed_chunks_equal_the_reference(bundle_factory, target):
    bundle = bundle_factory(target, "fp32")
    report = verify_bundle(bundle, seconds=7.5, fd_seeds=0)  # 3 chunks of 2.5 s
    assert report["gate"]["passed"], format_verify(report)
    assert [r["tokens"] > 0 for r in report["chunks"]] == [True, True, True, False]  # 3 chunks + the VAE flush
    assert report["overall"]["tokens_identical"]
    assert report["overall"]["audio_snr_db"] >= 60
    assert all(r["latent_snr_db"] >= 60 for r in report["chunks"] if r["tokens"])


@pytest.mark.parametrize("target", LINUX_TARGETS)
def test_bundle_chunks_are_seamless(bundle_factory, tiny_model, target):
    """Concatenated streamed chunks equal the offline decode of the streamed latents."""
    from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator

    backend, manifest = open_bundle(bundle_factory(target, "fp32"))
    settings = GenerationSettings(seconds=7.5, steps=2, seed=3)
    chunks = list(StreamingGenerator(backend, backend.spec).stream(manifest["presets"][0]["tokens"], settings))
    latents = np.concatenate([c.latents for c in chunks], axis=1)
    with torch.no_grad():
        offline = tiny_model.vae.decode(torch.from_numpy(latents)[None])[0].numpy()
    streamed = np.concatenate([c.audio for c in chunks])
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() <= 1e-4 * max(np.abs(offline).max(), 1e-6)


def test_generate_from_bundle_writes_wav_and_report(bundle_factory, tmp_path):
    out = tmp_path / "x.wav"
    report = generate_from_bundle(
        bundle_factory("onnx", "fp32"), prompt="test", tokens=None, seconds=3.0, out=out, progress=False
    )
    audio, sr = sf.read(out)
    assert sr == 24000 and len(audio) == 3 * 24000
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["conditioning_source"] == "preset 'test'" and saved["backend"] == "onnx"
    assert report["real_time_factor"] > 0


def test_text_prompts_go_through_the_bundles_rvq(bundle_factory, tiny_model):
    bundle = bundle_factory("onnx", "fp32")
    _, manifest = open_bundle(bundle)
    codes, how = bundle_conditioning(bundle, manifest, "slow ambient synth pads", None)
    assert how == "text encoder + the bundle's RVQ" and len(codes) == 12
    from melody_edge.models.conditioning import SentenceEmbeddingTextEncoder, default_text_encoder_dir

    with torch.no_grad():
        want = tiny_model.conditioner.tokens_from_prompt(
            ["slow ambient synth pads"], SentenceEmbeddingTextEncoder(default_text_encoder_dir())
        )
    assert codes == want[0].tolist()
    with pytest.raises(ValueError, match="got 2 conditioning tokens"):
        bundle_conditioning(bundle, manifest, None, "1,2")


@pytest.mark.parametrize("target", LINUX_TARGETS)
def test_wrong_input_shapes_name_the_file(bundle_factory, target):
    backend, _ = open_bundle(bundle_factory(target, "fp32"))
    spec = backend.spec
    with pytest.raises(BundleError, match=r"dpd\.(pte|onnx): input 'z' of dpd\.forward has shape"):
        backend.dpd(torch.zeros(2, spec.latent_channels, 100), torch.zeros(2, 100), torch.zeros(2, 10).long())


def test_backend_choice_is_checked(bundle_factory):
    bundle = bundle_factory("onnx", "fp32")
    with pytest.raises(BundleError, match="exported for onnx; the executorch backend cannot run it"):
        open_bundle(bundle, "executorch")
    with pytest.raises(BundleError, match="unknown backend 'tflite'"):
        open_bundle(bundle, "tflite")


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the non-macOS message")
def test_core_ml_is_refused_off_apple(bundle_factory, tmp_path):
    bundle = bundle_factory("onnx", "fp32")
    manifest = json.loads((bundle / "manifest.json").read_text())
    fake = tmp_path / "coreml"
    import shutil

    shutil.copytree(bundle, fake)
    manifest["target"] = "coreml"
    (fake / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailable, match="Core ML runs only on macOS/iOS"):
        open_bundle(fake)


def test_frechet_distance_is_zero_for_equal_statistics_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 8))
    assert abs(frechet_distance(a, a)) < 1e-8
    assert frechet_distance(a, a + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)


def test_quantized_bundle_reports_distribution_distance(bundle_factory, monkeypatch):
    """Bundle vs reference pools N seeds; the baseline pools the reference over N other, disjoint seeds."""
    from melody_edge.runtime import verify as verify_mod

    streamed = []  # (backend name, seed, audio) of every stream verify runs
    real = verify_mod.run_stream

    def recording(backend, spec, codes, settings):
        chunks = real(backend, spec, codes, settings)
        streamed.append((backend.name, settings.seed, np.concatenate([c.audio for c in chunks])))
        return chunks

    monkeypatch.setattr(verify_mod, "run_stream", recording)
    report = verify_bundle(bundle_factory("onnx", "int8"), seed=0, seconds=2.5, fd_seeds=2, fd_seconds=5.0)
    d = report["distribution"]
    fd_runs = streamed[2:]  # the first two are the seed-0 parity streams
    bundle_seeds = [s for name, s, _ in fd_runs if name == "onnx"]
    ref_seeds = [s for name, s, _ in fd_runs if name == "eager"]
    assert bundle_seeds == d["seeds"] == [1, 2]
    baseline = [s for s in ref_seeds if s not in bundle_seeds]
    assert sorted(ref_seeds) == sorted(bundle_seeds + baseline)  # the reference ran each seed once
    assert baseline == d["baseline_other_seeds"] and len(baseline) == len(bundle_seeds)
    assert not set(baseline) & set(bundle_seeds) and 0 not in baseline

    def pooled(name, seeds):
        return np.concatenate([log_mel(a, 24000) for n, s, a in fd_runs if n == name and s in seeds])

    ref = pooled("eager", bundle_seeds)
    assert d["fd_bundle_vs_reference"] == pytest.approx(frechet_distance(ref, pooled("onnx", bundle_seeds)))
    assert d["fd_reference_vs_reference_other_seed"] == pytest.approx(frechet_distance(ref, pooled("eager", baseline)))
    assert d["ratio"] == pytest.approx(d["fd_bundle_vs_reference"] / d["fd_reference_vs_reference_other_seed"])
    assert report["gate"]["passed"]
    assert "Fréchet" in format_verify(report)


def test_distribution_baseline_refuses_shared_or_fewer_seeds():
    from melody_edge.runtime.pipeline import GenerationSettings
    from melody_edge.runtime.verify import distribution_check

    runs = [GenerationSettings(seconds=1.0, seed=s) for s in (1, 2)]
    for other in ([GenerationSettings(seconds=1.0, seed=s) for s in (2, 3)], runs[:1]):
        with pytest.raises(ValueError, match="disjoint"):
            distribution_check(None, None, [], runs, other)


@pytest.mark.parametrize("target", LINUX_TARGETS)
def test_continuation_past_the_window_equals_the_reference(bundle_factory, monkeypatch, target):
    """One chunk past the 4-chunk window: the window slides and the LM is re-prefilled, in both pipelines."""
    from melody_edge.runtime.pipeline import StreamingGenerator

    bundle = bundle_factory(target, "fp32")
    stream = json.loads((bundle / "manifest.json").read_text())["stream"]
    n = stream["chunks"] + 1
    prefills = []  # start positions of every LM prefill
    real = StreamingGenerator._prefill

    def recording(self, ids, start):
        prefills.append(start)
        return real(self, ids, start)

    monkeypatch.setattr(StreamingGenerator, "_prefill", recording)
    report = verify_bundle(bundle, seconds=n * stream["chunk_frames"] / stream["latent_rate"], fd_seeds=0)
    assert sum(r["tokens"] > 0 for r in report["chunks"]) == n, format_verify(report)
    assert prefills.count(0) == 2 and prefills.count(stream["prefix_levels"]) == 2  # one re-prefill each
    for r in report["chunks"]:
        assert r["tokens_identical"] and r["audio_snr_db"] >= 40, format_verify(report)
    assert report["gate"]["passed"], format_verify(report)


def test_component_file_missing_from_manifest_files_is_refused(bundle_factory, tmp_path):
    """A file a component loads must have a sha256 in the manifest's files, or it would load unchecked."""
    import shutil

    src = bundle_factory("onnx", "fp32")
    for name, user in [("dpd.onnx", "component 'dpd'"), ("lm.weights", "component 'lm'")]:
        bundle = tmp_path / name
        shutil.copytree(src, bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        del manifest["files"][name]
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        pattern = rf"{name}: loaded by {user} but not listed in the manifest's files.*re-export the bundle"
        with pytest.raises(BundleError, match=pattern):
            open_bundle(bundle)


def test_unrolled_sampler_artifact_streams_like_the_stepwise_sampler(bundle_factory):
    from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator

    backend, manifest = open_bundle(bundle_factory("onnx", "fp32", sampler_artifact=True))
    # The export timed both forms and recorded the faster; pin it so the test does not depend on timing.
    assert manifest["sampler"]["preferred"] in ("unrolled", "stepwise")
    backend.manifest["sampler"]["preferred"] = "unrolled"
    settings = GenerationSettings(seconds=5.0, steps=manifest["sampler"]["steps"], seed=1)
    events = []
    fast = list(
        StreamingGenerator(backend, backend.spec, lambda e, p: events.append(e)).stream(
            manifest["presets"][0]["tokens"], settings
        )
    )
    slow = list(
        StreamingGenerator(backend, backend.spec, use_sampler_artifact=False).stream(
            manifest["presets"][0]["tokens"], settings
        )
    )
    assert events.count("dpd_sampler") == 2 and "dpd" not in events
    # A bundle whose export measured T network calls as faster streams that way, with the same result.
    backend.manifest["sampler"]["preferred"] = "stepwise"
    events.clear()
    stepwise = list(
        StreamingGenerator(backend, backend.spec, lambda e, p: events.append(e)).stream(
            manifest["presets"][0]["tokens"], settings
        )
    )
    assert "dpd_sampler" not in events and events.count("dpd") > 0
    assert [c.tokens for c in stepwise] == [c.tokens for c in slow]
    for a, b in zip(fast, slow):
        assert a.tokens == b.tokens
        if a.tokens:
            assert snr_db(b.latents, a.latents) >= 60


@pytest.mark.parametrize(("target", "artifact"), [("onnx", "dpd.onnx"), ("executorch-xnnpack", "dpd.pte")])
def test_a_damaged_artifact_is_refused_with_its_name_on_every_runnable_backend(
    bundle_factory, tmp_path, target, artifact
):
    import shutil

    from melody_edge.runtime.manifest import load_manifest, sha256_tree, tree_size

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_factory(target, "fp32"), bundle)
    path = bundle / artifact
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(BundleError, match=rf"{artifact.replace('.', '[.]')}.*(sha256|bytes)"):
        load_manifest(bundle)
    # Someone re-signed the manifest over the damaged file: the backend still names it instead of crashing.
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][artifact] = {"sha256": sha256_tree(path), "bytes": tree_size(path)}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"{artifact.replace('.', '[.]')}.*(cannot load|re-export)"):
        backend, _ = open_bundle(bundle)
        backend.dpd(*[torch.zeros(t["shape"]) for t in manifest["components"]["dpd"]["methods"]["forward"]["inputs"]])


@pytest.mark.parametrize("target", ["onnx", "executorch-xnnpack"])
def test_the_encoder_artifact_is_gated_and_runs_like_eager(bundle_factory, tiny_model, target):
    from melody_edge.runtime.eager import EagerBackend

    bundle = bundle_factory(target, "fp32", encoder_artifact=True)
    report = json.loads((bundle / "parity.json").read_text())
    enc = report["components"]["vae_encoder"]["float"]
    assert enc["snr_db"] >= 60 and enc["nan_inf"] == 0, enc
    backend, manifest = open_bundle(bundle)
    n = manifest["components"]["vae_encoder"]["methods"]["forward"]["inputs"][0]["shape"][-1]
    audio = 0.3 * torch.sin(torch.arange(n) * 2 * torch.pi * 220 / 24000)[None]
    got = backend.vae_encode(audio)
    assert got.shape == (1, 16, n // 96)
    assert snr_db(EagerBackend(tiny_model).vae_encode(audio).numpy(), got.numpy()) >= 60
    plain, _ = open_bundle(bundle_factory(target, "fp32"))
    with pytest.raises(BundleError, match=r"no vae_encoder artifact.*--encoder"):
        plain.vae_encode(audio)
