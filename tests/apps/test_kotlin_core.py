"""The Android app's platform-free Kotlin core, compiled with kotlinc and checked against the Python runtime.

The core (android_demo/core) must reproduce the runtime's random streams, token sampling and angle
schedule bit for bit, and drive the models exactly as runtime/pipeline.py does: a trace of every
component call of a streamed generation from a tiny ONNX bundle is replayed through it, and the
replay fails on the first input that differs (tokens, positions, angles exactly; latents within 1e-5).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from toolchains import compile_jar

from melody_edge.models.diffusion import angle_schedule
from melody_edge.runtime.bench import bench_schema
from melody_edge.runtime.open import open_bundle
from melody_edge.runtime.pipeline import GenerationSettings
from melody_edge.runtime.rng import PortableRng
from melody_edge.runtime.sampling import sample_token
from melody_edge.runtime.trace import read_trace, record_trace

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "android_demo" / "core" / "src"


def _vectors() -> dict:
    rng_cases = []
    for seed, stream in ((0, 1), (7, 2), (123456789, 1), (2**40 + 3, 2)):
        rng = PortableRng(seed, stream)
        uniform = [float(x) for x in rng.uniform(5)]
        normal = [float(x) for x in rng.normal(7)]
        rng_cases.append({"seed": seed, "stream": stream, "uniform": uniform, "normal": normal})
    gen = np.random.default_rng(0)
    sampling = []
    for temperature, top_k in ((1.0, 0), (0.7, 5), (0.0, 0), (1.3, 50)):
        for _ in range(5):
            logits = (gen.standard_normal(64) * 3).astype(np.float32)
            logits[gen.integers(64)] = logits.max()  # a tie: the lower index must win
            u = float(gen.random())
            token = sample_token(logits, temperature, top_k, u)
            sampling.append(
                {
                    "logits": [float(x) for x in logits],
                    "temperature": temperature,
                    "top_k": top_k,
                    "u": u,
                    "token": token,
                }
            )
    schedules = [{"steps": t, "angles": angle_schedule(t)} for t in (1, 2, 4, 5, 10)]
    return {"rng": rng_cases, "sampling": sampling, "schedules": schedules}


def test_trace_round_trip(bundle_factory, tmp_path):
    backend, _ = open_bundle(bundle_factory("onnx", "fp32"))
    settings = GenerationSettings(seconds=3.0, steps=2, seed=5)
    info = record_trace(backend, backend.spec, list(range(12)), settings, tmp_path / "t.bin")
    header, records = read_trace(tmp_path / "t.bin")
    assert header["prefix_codes"] == list(range(12)) and header["settings"]["seed"] == 5
    events = [e for e, _ in records]
    assert events[:2] == ["noise", "lm_prefill"] and events.count("dpd") == 2 * 2  # 2 chunks x 2 steps
    assert info["events"]["vae_decode"] == events.count("vae_decode")
    audio = np.concatenate([a["audio"] for e, a in records if e == "vae_decode"])
    assert np.isfinite(audio).all()
    dpd = next(a for e, a in records if e == "dpd")
    assert dpd["z"].shape[0] == 2 and (dpd["tokens"][1] == backend.spec.null_token).all()  # guidance batch


def run_core(core_jar: Path, *args: Path) -> subprocess.CompletedProcess:
    """CoreTests.kt's main: VECTORS.json TRACE.bin [BUNDLE_DIR]."""
    command = ["java", "-cp", str(core_jar), "ai.melodyedge.core.CoreTestsKt", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def core_jar(tmp_path_factory) -> Path:
    jar = tmp_path_factory.mktemp("kotlin") / "core.jar"
    return compile_jar([CORE / "main" / "kotlin", CORE / "test" / "kotlin"], jar)


def test_kotlin_core_replays_the_runtime(core_jar, bundle_factory, tmp_path):
    """5 chunks of 2.5 s through a 4-chunk window: the progressive first window and one continuation."""
    vectors = tmp_path / "vectors.json"
    vectors.write_text(json.dumps(_vectors()))
    bundle = bundle_factory("onnx", "fp32")
    backend, manifest = open_bundle(bundle)
    # first_steps=1: the first chunk's denoise in one step, the later ones in two (the app's schedule too).
    settings = GenerationSettings(seconds=11.3, steps=2, temperature=1.0, top_k=20, seed=11, first_steps=1)
    codes = manifest["presets"][0]["tokens"]
    record_trace(backend, backend.spec, codes, settings, tmp_path / "trace.bin")
    proc = run_core(core_jar, vectors, tmp_path / "trace.bin", bundle)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # 11.3 s = 5 chunks (the 5th slides the window once); 271 200 samples at 24 kHz.
    assert "OK" in proc.stdout and "5 chunks, 271200 samples" in proc.stdout
    # The core's latency report has `melody-edge bench --json`'s schema (the app's "copy report").
    report = json.loads((tmp_path / "trace.bin.report.json").read_text())
    jsonschema.validate(report, bench_schema())
    run = report["runs"][0]
    _, records = read_trace(tmp_path / "trace.bin")
    calls = sum(e != "noise" for e, _ in records)
    assert run["nfe_per_10s"] == pytest.approx(calls * 10 / 11.3) and len(run["chunks"]) == 5


def test_kotlin_replay_catches_a_wrong_input(core_jar, bundle_factory, tmp_path):
    """The replay is not vacuous: a trace whose recorded token differs makes the core's run fail."""
    vectors = tmp_path / "vectors.json"
    vectors.write_text(json.dumps(_vectors()))
    backend, _ = open_bundle(bundle_factory("onnx", "fp32"))
    path = tmp_path / "trace.bin"
    record_trace(backend, backend.spec, list(range(12)), GenerationSettings(seconds=2.5, steps=2, seed=1), path)
    raw = bytearray(path.read_bytes())
    marker = b"\x06tokens\x02\x02"  # first dpd record's tokens array: flip one token id
    at = raw.index(marker) + len(marker) + 8
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    proc = run_core(core_jar, vectors, path)
    assert proc.returncode == 1 and "dpd (call" in proc.stderr and "tokens" in proc.stderr


@pytest.mark.parametrize("preferred", ["unrolled", "stepwise"])
def test_kotlin_core_follows_the_bundles_preferred_sampler(core_jar, bundle_factory, tmp_path, preferred):
    """With the unrolled sampler allowed, the runtime makes one dpd_sampler call per chunk where the manifest
    prefers it and T dpd calls where it does not; the core, reading the same manifest, must do the same."""
    import shutil

    vectors = tmp_path / "vectors.json"
    vectors.write_text(json.dumps(_vectors()))
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_factory("onnx", "fp32", sampler_artifact=True), bundle)
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sampler"]["preferred"] = preferred  # what the export measured varies from host to host
    manifest_path.write_text(json.dumps(manifest))
    backend, manifest = open_bundle(bundle)
    # The first chunk in one step, which the T-step artifact cannot do: T calls there, either way.
    settings = GenerationSettings(seconds=6.0, steps=manifest["sampler"]["steps"], top_k=20, seed=3, first_steps=1)
    info = record_trace(backend, backend.spec, list(range(12)), settings, tmp_path / "trace.bin", True)
    chunks = 3  # 6 s of 2.5 s chunks
    passes = 1 + (chunks - 1) * settings.steps
    if preferred == "unrolled":
        assert info["events"]["dpd_sampler"] == chunks - 1 and info["events"]["dpd"] == 1
    else:
        assert info["events"]["dpd"] == passes and "dpd_sampler" not in info["events"]
    proc = run_core(core_jar, vectors, tmp_path / "trace.bin", bundle)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    unrolled_calls = chunks - 1 if preferred == "unrolled" else 0
    assert f"sampler calls: {unrolled_calls} unrolled, {passes} dpd passes" in proc.stdout
    report = json.loads((tmp_path / "trace.bin.report.json").read_text())
    jsonschema.validate(report, bench_schema())
    assert report["runs"][0]["sampler_artifact_calls"] == unrolled_calls


def test_kotlin_core_replays_a_guided_lm_bundle_and_reads_its_scale(core_jar, bundle_factory, tmp_path):
    """A bundle whose LM program guides (two cache rows inside lm's methods): the app's calls are unchanged."""
    vectors = tmp_path / "vectors.json"
    vectors.write_text(json.dumps(_vectors()))
    bundle = bundle_factory("onnx", "fp32", lm_guidance=3.0)
    backend, manifest = open_bundle(bundle)
    settings = GenerationSettings(seconds=5.0, steps=2, seed=3)
    record_trace(backend, backend.spec, manifest["presets"][0]["tokens"], settings, tmp_path / "trace.bin")
    proc = run_core(core_jar, vectors, tmp_path / "trace.bin", bundle)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "OK" in proc.stdout and "lm guidance 3.0" in proc.stdout
