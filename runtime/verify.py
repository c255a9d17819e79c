"""``melody-edge verify``: end-to-end parity of a bundle against the PyTorch reference.

Same prompt, seed and noise through both streaming pipelines; per chunk: semantic tokens, latents
and audio compared. Quantized bundles legitimately produce a different sample once one token flips,
so they also get a distribution-level figure: the Fréchet distance between log-mel statistics of
bundle and reference outputs over several seeds, next to the same distance between reference runs
over those seeds and reference runs over as many other seeds (the baseline).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..models.melody import MeLoDy, load_model
from .backend import Backend, StreamSpec
from .bundle_generate import bundle_conditioning
from .eager import EagerBackend
from .manifest import BundleError
from .open import open_bundle
from .pipeline import AudioChunk, GenerationSettings, StreamingGenerator

FP32_AUDIO_SNR_DB = 40.0


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    noise = float(np.mean((out - ref) ** 2)) if ref.size else 0.0
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(float(np.mean(ref**2)), 1e-30) / noise)


def run_stream(backend: Backend, spec: StreamSpec, codes: list[int], settings: GenerationSettings) -> list[AudioChunk]:
    return list(StreamingGenerator(backend, spec).stream(codes, settings))


def compare_streams(ref: list[AudioChunk], out: list[AudioChunk]) -> list[dict]:
    rows = []
    for a, b in zip(ref, out):
        n = min(len(a.tokens), len(b.tokens))
        equal = sum(int(x == y) for x, y in zip(a.tokens[:n], b.tokens[:n]))
        rows.append(
            {
                "chunk": a.index,
                "tokens": len(a.tokens),
                "tokens_equal": equal,
                "tokens_identical": a.tokens == b.tokens,
                "latent_snr_db": snr_db(a.latents, b.latents) if a.latents.size else None,
                "audio_snr_db": snr_db(a.audio, b.audio),
                "audio_max_abs_error": float(np.max(np.abs(a.audio - b.audio))) if a.audio.size else 0.0,
                "nan_inf": int((~np.isfinite(b.audio)).sum() + (~np.isfinite(b.latents)).sum()),
            }
        )
    return rows


def log_mel(audio: np.ndarray, sample_rate: int, n_mels: int = 64, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Log-mel frames [T, n_mels] (HTK mel scale, Hann window): the features the Fréchet distance uses."""
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs().pow(2).numpy()
    mel = _mel_filters(sample_rate, n_fft, n_mels) @ spec
    return np.log(mel + 1e-6).T


def _mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, mid, hi = edges[i : i + 3]
        fb[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return fb


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows of ``a`` and ``b`` ([N, D] each)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr(sqrt(s1 s2)) through the symmetric form sqrt(s1) s2 sqrt(s1): stable eigenvalues, no scipy.
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(cross, 0, None))))


def reference_model(manifest: dict, checkpoint: str | Path | None = None, config_name: str | None = None) -> MeLoDy:
    """The eager model the bundle was exported from: explicit arguments, else the manifest's source."""
    from ..export.bundle import weights_fingerprint
    from ..models.config import ConfigError
    from ..models.melody import with_lm_guidance, with_window_seconds

    source = manifest["model"].get("source") or {}
    if checkpoint or config_name:
        model = load_model(config_name, checkpoint, seed=int(source.get("seed", 0)))
    elif "checkpoint" in source or "config" in source:
        if "checkpoint" in source:
            model = load_model(None, source["checkpoint"])
        else:
            model = load_model(source["config"], None, seed=int(source.get("seed", 0)))
        if source.get("window_seconds"):
            model = with_window_seconds(model, float(source["window_seconds"]))
    else:
        raise BundleError("the manifest does not say which model it was exported from; pass --checkpoint or --config")
    want = manifest["model"].get("weights_sha256")
    if want and weights_fingerprint(model) != want:
        raise BundleError(
            "the reference model's weights differ from the ones this bundle was exported from "
            f"(manifest weights_sha256 {want[:12]}…); pass the checkpoint it was exported from with --checkpoint"
        )
    sampler = manifest["sampler"]
    baked = float(sampler.get("lm_guidance_scale", 1.0))
    if baked != model.config.lm_guidance_scale:  # exported with --lm-cfg: guide the reference the same way
        try:
            model = with_lm_guidance(model, baked, sampler.get("lm_null_codes") or None)
        except ConfigError as exc:
            raise BundleError(f"the bundle's LM guides with scale {baked:g}, the reference cannot: {exc}") from exc
    return model


def verify_bundle(
    bundle: str | Path,
    *,
    backend_name: str | None = None,
    checkpoint: str | Path | None = None,
    config_name: str | None = None,
    seconds: float = 30.0,
    seed: int = 0,
    prompt: str | None = None,
    fd_seeds: int = 3,
    fd_seconds: float = 10.0,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    backend, manifest = open_bundle(bundle, backend_name)
    model = reference_model(manifest, checkpoint, config_name)
    ref_backend = EagerBackend(model)
    sampler = manifest["sampler"]
    codes, source = bundle_conditioning(bundle, manifest, prompt, None)

    def settings(s: int, secs: float) -> GenerationSettings:
        return GenerationSettings(
            seconds=secs,
            steps=sampler["steps"],
            guidance_scale=sampler["guidance_scale"],
            temperature=sampler["temperature"],
            top_k=sampler["top_k"],
            seed=s,
        )

    log(f"streaming {seconds:g} s through the bundle ({backend.name}) and the reference (seed {seed}) ...")
    ref = run_stream(ref_backend, ref_backend.spec, codes, settings(seed, seconds))
    out = run_stream(backend, backend.spec, codes, settings(seed, seconds))
    rows = compare_streams(ref, out)
    ref_audio = np.concatenate([c.audio for c in ref])
    out_audio = np.concatenate([c.audio for c in out])
    all_tokens_identical = all(r["tokens_identical"] for r in rows)
    first_diff = next((r["chunk"] for r in rows if not r["tokens_identical"]), None)
    overall = {
        "seconds": len(ref_audio) / backend.spec.sample_rate,
        "chunks": len(rows),
        "tokens_identical": all_tokens_identical,
        "first_chunk_with_token_mismatch": first_diff,
        "audio_snr_db": snr_db(ref_audio, out_audio),
        "audio_max_abs_error": float(np.max(np.abs(ref_audio - out_audio))),
        "nan_inf": sum(r["nan_inf"] for r in rows),
    }
    report = {
        "bundle": str(bundle),
        "target": manifest["target"],
        "recipe": manifest["recipe"]["name"],
        "backend": backend.name,
        "conditioning": source,
        "seed": seed,
        "chunks": rows,
        "overall": overall,
    }
    quantized = manifest["recipe"]["weights"] not in ("fp32",)
    if quantized and fd_seeds > 0:
        log(
            f"distribution check: {fd_seeds} seeds x {fd_seconds:g} s through both, "
            f"plus the reference over {fd_seeds} other seeds ..."
        )
        report["distribution"] = distribution_check(
            backend,
            ref_backend,
            codes,
            [settings(seed + 1 + i, fd_seconds) for i in range(fd_seeds)],
            [settings(seed + 1 + fd_seeds + i, fd_seconds) for i in range(fd_seeds)],
        )
    failures = []
    if overall["nan_inf"]:
        failures.append(f"{overall['nan_inf']} NaN/Inf values in the bundle's output")
    if not quantized:
        if not all_tokens_identical:
            failures.append(f"semantic tokens differ from chunk {first_diff}")
        if overall["audio_snr_db"] < FP32_AUDIO_SNR_DB:
            failures.append(f"audio SNR {overall['audio_snr_db']:.1f} dB < {FP32_AUDIO_SNR_DB:.0f} dB")
    report["gate"] = {
        "passed": not failures,
        "failures": failures,
        "rule": "fp32: identical tokens and audio SNR >= 40 dB end to end"
        if not quantized
        else "quantized: finite output; compare the Fréchet distances (informational)",
    }
    return report


def distribution_check(backend: Backend, ref_backend: Backend, codes: list[int], runs: list, other_runs: list) -> dict:
    """Fréchet distance of log-mel statistics: bundle vs reference pooled over the seeds of ``runs``, and
    the baseline, reference over ``runs`` vs reference over ``other_runs`` (as many seeds, none shared)."""
    seeds, other_seeds = [s.seed for s in runs], [s.seed for s in other_runs]
    if len(other_seeds) != len(seeds) or set(seeds) & set(other_seeds):
        raise ValueError(f"the baseline needs {len(seeds)} seeds disjoint from {seeds}, got {other_seeds}")
    sr = ref_backend.spec.sample_rate

    def feats(b: Backend, s: GenerationSettings) -> np.ndarray:
        return log_mel(np.concatenate([c.audio for c in run_stream(b, b.spec, codes, s)]), sr)

    ref_all = np.concatenate([feats(ref_backend, s) for s in runs])
    out_all = np.concatenate([feats(backend, s) for s in runs])
    other_all = np.concatenate([feats(ref_backend, s) for s in other_runs])
    fd_bundle = frechet_distance(ref_all, out_all)
    # Baseline with the same pool size: the reference over the same N seeds against N other seeds.
    fd_seed = frechet_distance(ref_all, other_all)
    return {
        "seeds": seeds,
        "baseline_other_seeds": other_seeds,
        "seconds_per_seed": runs[0].seconds,
        "fd_bundle_vs_reference": fd_bundle,
        "fd_reference_vs_reference_other_seed": fd_seed,
        "ratio": fd_bundle / fd_seed if fd_seed > 0 else math.inf,
        "features": "log-mel, 64 bands, n_fft 1024, hop 256",
    }


def format_verify(report: dict) -> str:
    o = report["overall"]
    lines = [
        f"verify {report['bundle']} ({report['target']}/{report['recipe']}, backend {report['backend']}, "
        f"{report['conditioning']}, seed {report['seed']})",
        f"  {'chunk':>5} {'tokens eq':>10} {'latent SNR':>11} {'audio SNR':>10} {'max abs':>9} {'NaN':>4}",
    ]
    for r in report["chunks"]:
        lat = f"{r['latent_snr_db']:11.1f}" if r["latent_snr_db"] is not None else f"{'-':>11}"
        lines.append(
            f"  {r['chunk']:>5} {r['tokens_equal']:>4}/{r['tokens']:<5} {lat} {r['audio_snr_db']:10.1f} "
            f"{r['audio_max_abs_error']:9.2g} {r['nan_inf']:>4}"
        )
    lines.append(
        f"  overall: {o['seconds']:.1f} s, tokens identical {o['tokens_identical']}, audio SNR "
        f"{o['audio_snr_db']:.1f} dB, max abs {o['audio_max_abs_error']:.2g}, NaN/Inf {o['nan_inf']}"
    )
    d = report.get("distribution")
    if d:
        lines.append(
            f"  Fréchet (log-mel), seeds {d['seeds']}: bundle vs reference {d['fd_bundle_vs_reference']:.3f}; "
            f"reference vs reference over seeds {d['baseline_other_seeds']} "
            f"{d['fd_reference_vs_reference_other_seed']:.3f} (ratio {d['ratio']:.2f})"
        )
    g = report["gate"]
    lines.append("  gate: PASSED" if g["passed"] else "  gate: FAILED: " + "; ".join(g["failures"]))
    return "\n".join(lines)
