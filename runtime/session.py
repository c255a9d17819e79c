"""Run a streamed generation into a WAV with progress, and build its latency report."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backend import Backend, StreamSpec
from .pipeline import GenerationSettings, StreamingGenerator
from .wav import StreamingWavWriter, atomic_write_text, sigint_deferred


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def generate_to_wav(
    backend: Backend,
    spec: StreamSpec,
    prefix_codes: list[int],
    settings: GenerationSettings,
    out: str | Path,
    progress: bool = True,
    extra: dict | None = None,
) -> dict:
    """Stream chunks into ``out`` as they are ready; return the report (also written beside the WAV).

    On Ctrl-C the WAV holds every chunk written so far (its header is updated per chunk) and the
    interrupt propagates after the report records ``"interrupted": true``.
    """
    out = Path(out)
    gen = StreamingGenerator(backend, spec)
    n_chunks = gen.num_chunks(settings.seconds)
    chunks: list[dict] = []
    start = time.perf_counter()
    first_audio = None
    interrupted = False
    bar = tqdm(total=n_chunks, unit="chunk", desc="generating", disable=not progress, file=sys.stderr)
    audio_s = 0.0
    try:
        with StreamingWavWriter(out, spec.sample_rate) as wav:
            last = start
            for chunk in gen.stream(prefix_codes, settings):
                with sigint_deferred():  # the WAV and the report always hold the same chunks
                    wav.write(chunk.audio)
                    now = time.perf_counter()
                    if first_audio is None:
                        first_audio = now - start
                    audio_s += chunk.audio.size / spec.sample_rate
                    chunks.append(
                        {
                            "index": chunk.index,
                            "samples": int(chunk.audio.size),
                            "lm_s": chunk.lm_seconds,
                            "dpd_s": chunk.dpd_seconds,
                            "vae_s": chunk.vae_seconds,
                            "latency_s": now - last,
                            "tokens": len(chunk.tokens),
                        }
                    )
                last = now
                if chunk.index < n_chunks:
                    bar.update(1)
                bar.set_postfix(rtf=f"{(now - start) / max(audio_s, 1e-9):.3f}", audio=f"{audio_s:.1f}s")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    wall = time.perf_counter() - start
    latencies = [c["latency_s"] for c in chunks if c["tokens"]]
    report = {
        "wav": str(out),
        "backend": backend.name,
        "seconds_requested": settings.seconds,
        "seconds_written": audio_s,
        "sample_rate": spec.sample_rate,
        "settings": {
            "steps": settings.steps,
            "guidance_scale": settings.guidance_scale,
            "temperature": settings.temperature,
            "top_k": settings.top_k,
            "seed": settings.seed,
        },
        "conditioning_tokens": list(prefix_codes),
        "time_to_first_audio_s": first_audio,
        "wall_s": wall,
        "real_time_factor": wall / audio_s if audio_s else None,
        "chunk_latency_p50_s": percentile(latencies, 50),
        "chunk_latency_p95_s": percentile(latencies, 95),
        "chunk_audio_seconds": spec.chunk_frames / spec.latent_rate,
        "peak_rss_mb": peak_rss_mb(),
        "interrupted": interrupted,
        "chunks": chunks,
        **(extra or {}),
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    if interrupted:
        raise KeyboardInterrupt
    return report
