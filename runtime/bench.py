"""``melody-edge bench``: stream from bundles and from the PyTorch eager reference, side by side.

Each run happens in its own spawned process so that peak RSS and thread settings belong to that
run alone; the parent only collects the reports, prints a table, writes JSON and a PNG.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .manifest import MANIFEST, BundleError, load_manifest, tree_size

MUSICLM_NFE_PER_SECOND = 25 + 200 + 400  # semantic + coarse + fine acoustic tokens per second of audio
SCHEMA_VERSION = 1


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
        try:
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)
        except Exception:  # the pybinding is optional: eager/ONNX runs do not need it
            pass


SATURATION = 0.99  # |sample| above this counts as saturated


def _run_one(
    kind: str,
    bundle: str,
    seconds: float,
    steps: int | None,
    threads: int | None,
    seed: int,
    use_sampler: bool = True,
    first_steps: int = 0,
) -> dict:
    """Stream ``seconds`` of audio with one backend and measure it (runs inside the child process)."""
    import torch

    from .bundle_generate import bundle_conditioning
    from .eager import EagerBackend
    from .open import open_bundle
    from .pipeline import GenerationSettings, StreamingGenerator
    from .session import peak_rss_mb
    from .verify import reference_model

    _set_threads(threads)
    t_load = time.perf_counter()
    manifest = load_manifest(bundle)
    if kind == "eager":
        backend = EagerBackend(reference_model(manifest))
        onnx_threads = None
    else:
        from .open import default_backend

        name = default_backend(manifest["target"])
        if name == "onnx" and threads:
            from .onnx_backend import OnnxBackend

            backend = OnnxBackend(bundle, manifest, threads=threads)
        else:
            backend, _ = open_bundle(bundle)
        onnx_threads = threads
    load_s = time.perf_counter() - t_load
    sampler = manifest["sampler"]
    settings = GenerationSettings(
        seconds=seconds,
        steps=sampler["steps"] if steps is None else steps,
        guidance_scale=sampler["guidance_scale"],
        temperature=sampler["temperature"],
        top_k=sampler["top_k"],
        seed=seed,
        first_steps=first_steps,
    )
    codes, _ = bundle_conditioning(bundle, manifest, None, None)
    counts = {"dpd": 0, "lm_decode": 0, "lm_prefill": 0, "vae_decode": 0, "dpd_sampler": 0}

    def recorder(event: str, payload: dict) -> None:
        if event in counts:
            counts[event] += 1
        if event == "dpd_sampler":  # one call, but T guided network passes inside
            counts["dpd"] += payload["steps"]

    spec = backend.spec
    gen = StreamingGenerator(backend, spec, recorder, use_sampler_artifact=use_sampler)
    chunks = []
    start = last = time.perf_counter()
    first_audio = None
    audio_s = 0.0
    with torch.no_grad():
        for ch in gen.stream(codes, settings):
            now = time.perf_counter()
            first_audio = now - start if first_audio is None else first_audio
            finite = bool(np.isfinite(ch.audio).all())
            peak = float(np.abs(ch.audio).max()) if ch.audio.size else 0.0
            audio_s += ch.audio.size / spec.sample_rate
            chunks.append(
                {
                    "index": ch.index,
                    "latency_s": now - last,
                    "lm_s": ch.lm_seconds,
                    "dpd_s": ch.dpd_seconds,
                    "vae_s": ch.vae_seconds,
                    "tokens": len(ch.tokens),
                    "audio_s": ch.audio.size / spec.sample_rate,
                    "finite": finite,
                    "peak": peak,
                    # The VAE ends in tanh: a diverging stream saturates instead of growing (benchmarks/soak.py).
                    "saturated": int(np.count_nonzero(np.abs(ch.audio) > SATURATION)),
                    "samples": int(ch.audio.size),
                    "rss_mb": _current_rss_mb(),
                }
            )
            last = now
    wall = time.perf_counter() - start
    full = [c for c in chunks if c["tokens"]]
    lat = [c["latency_s"] for c in full]
    lm_total = sum(c["lm_s"] for c in full)
    tokens = sum(c["tokens"] for c in full)
    dpd_calls = max(counts["dpd"], 1)
    nfe = counts["dpd"] + counts["lm_decode"] + counts["lm_prefill"] + counts["vae_decode"]
    nfe_10s = nfe * 10.0 / max(audio_s, 1e-9)
    return {
        "name": _run_name(kind, manifest),
        "kind": kind,
        "bundle": bundle,
        "backend": backend.name,
        "model": manifest["model"]["name"],
        "threads": threads or os.cpu_count(),
        "onnx_threads": onnx_threads,
        "seconds": audio_s,
        "steps": settings.steps,
        "first_steps": settings.first_steps or settings.steps,
        "load_s": load_s,
        "time_to_first_audio_s": first_audio,
        "wall_s": wall,
        "real_time_factor": wall / audio_s if audio_s else None,
        "chunk_latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
        "chunk_latency_p95_s": float(np.percentile(lat, 95)) if lat else None,
        "chunk_audio_s": spec.chunk_frames / spec.latent_rate,
        "lm_tokens_per_s": tokens / lm_total if lm_total else None,
        "dpd_step_s": sum(c["dpd_s"] for c in full) / dpd_calls,
        "sampler_artifact_calls": counts["dpd_sampler"],
        "vae_chunk_s": float(np.median([c["vae_s"] for c in full])) if full else None,
        "peak_rss_mb": peak_rss_mb(),
        "bundle_bytes": None if kind == "eager" else _bundle_bytes(bundle),
        "nfe_per_10s": nfe_10s,
        "musiclm_nfe_per_10s": MUSICLM_NFE_PER_SECOND * 10,
        "audio_finite": all(c["finite"] for c in chunks),
        "audio_peak": max((c["peak"] for c in chunks), default=0.0),
        "chunks": chunks,
    }


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _bundle_bytes(bundle: str) -> int:
    manifest = json.loads((Path(bundle) / MANIFEST).read_text())
    return sum(tree_size(Path(bundle) / name) for name in manifest["files"])


def _child(queue, args) -> None:
    try:
        queue.put(("ok", _run_one(*args)))
    except BaseException as exc:  # report every failure to the parent instead of dying silently
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def run_isolated(*args, timeout: float = 3600.0) -> dict:
    """Run :func:`_run_one` in a fresh spawned process and return its report."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, args))
    proc.start()
    try:
        status, payload = queue.get(timeout=timeout)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise BundleError(f"benchmark run failed ({args[0]} {args[1]}): {payload}")
    return payload


def bench(
    bundles: list[str | Path],
    seconds: float = 10.0,
    threads: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    include_eager: bool = True,
    isolate: bool = True,
    use_sampler: bool = True,
    log: Callable[[str], None] = lambda _: None,
    first_steps: int = 0,
) -> dict:
    """Benchmark every bundle, plus the eager reference of each distinct model among them, in one run.

    Each bundle's ``speedup_vs_eager`` is against the eager run of its own model (same weights), so a
    bench of bundles exported from different checkpoints never divides by another model's time.
    """
    if not bundles:
        raise ValueError("give at least one bundle")
    paths = [str(Path(b)) for b in bundles]
    # Fail fast, with the bundle's own error, before any long run.
    model_of = {p: _model_key(load_manifest(p)) for p in paths}
    runner = run_isolated if isolate else _run_one
    runs = []
    eager_for = {}  # model key -> the bundle whose manifest builds that model's eager reference
    for p in paths:
        eager_for.setdefault(model_of[p], p)
    plan = ([("eager", p) for p in eager_for.values()] if include_eager else []) + [("bundle", p) for p in paths]
    eager_runs = {}
    for kind, path in plan:
        log(f"benchmarking {'eager reference of ' if kind == 'eager' else ''}{path} ({seconds:g} s of audio) ...")
        run = runner(kind, path, seconds, steps, threads, seed, use_sampler, first_steps)
        run["model_key"] = model_of[path]
        runs.append(run)
        if kind == "eager":
            eager_runs[model_of[path]] = run
    for r in runs:
        eager = eager_runs.get(r["model_key"])
        r["speedup_vs_eager"] = (
            eager["real_time_factor"] / r["real_time_factor"] if eager and r["real_time_factor"] else None
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": _machine(),
        "seconds": seconds,
        "runs": runs,
    }


def _lm_guidance(manifest: dict) -> float:
    return float(manifest.get("sampler", {}).get("lm_guidance_scale", 1.0))


def _run_name(kind: str, manifest: dict) -> str:
    name = "eager (PyTorch)" if kind == "eager" else f"{manifest['target']}/{manifest['recipe']['name']}"
    scale = _lm_guidance(manifest)
    return name if scale == 1.0 else f"{name} lm-cfg {scale:g}"


def _model_key(manifest: dict) -> str:
    """What identifies a bundle's model: its weights fingerprint (else its source: config name and seed)
    and its LM guidance, which doubles the LM's rows (so a guided bundle is timed against guided eager)."""
    model = manifest["model"]
    weights = model.get("weights_sha256") or json.dumps(model.get("source"), sort_keys=True)
    scale = _lm_guidance(manifest)
    return weights if scale == 1.0 else f"{weights} lm-cfg {scale:g}"


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with one of ``keys`` (None off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; elsewhere platform.processor()).

    Two "2-core x86_64" hosts can differ 2-3x in speed (AVX-512 and AMX against AVX2), so a result
    names the CPU it was measured on.
    """
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


_SIMD = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimd", "sve")


def simd_flags() -> list[str]:
    """The vector extensions the kernels may use, of those that move these benchmarks (Linux only)."""
    present = set((_cpuinfo("flags", "Features") or "").split())
    return [f for f in _SIMD if f in present]


def _machine() -> dict:
    import platform

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "simd": simd_flags(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def format_bench(result: dict) -> str:
    w = max([28, *(len(r["name"]) for r in result["runs"])])
    head = (
        f"{'run':<{w}} {'TTFA s':>7} {'p50 s':>7} {'p95 s':>7} {'RTF':>6} {'x eager':>7} {'tok/s':>7} "
        f"{'DPD s':>7} {'VAE s':>7} {'RSS MB':>7} {'MB':>7} {'NFE/10s':>8}"
    )
    lines = [head]
    for r in result["runs"]:

        def f(v, fmt):
            return format(v, fmt) if isinstance(v, (int, float)) and not math.isnan(v) else "-"

        mb = r["bundle_bytes"] / 1e6 if r["bundle_bytes"] else None
        lines.append(
            f"{r['name']:<{w}} {f(r['time_to_first_audio_s'], '7.3f')} {f(r['chunk_latency_p50_s'], '7.3f')} "
            f"{f(r['chunk_latency_p95_s'], '7.3f')} {f(r['real_time_factor'], '6.3f')} "
            f"{f(r['speedup_vs_eager'], '7.2f')} {f(r['lm_tokens_per_s'], '7.0f')} {f(r['dpd_step_s'], '7.3f')} "
            f"{f(r['vae_chunk_s'], '7.3f')} {f(r['peak_rss_mb'], '7.0f')} {f(mb, '7.1f')} "
            f"{f(r['nfe_per_10s'], '8.0f')}"
        )
    m = result["runs"][0]["musiclm_nfe_per_10s"] if result["runs"] else 0
    lines.append(
        f"MusicLM: {m} network passes per 10 s; RTF = compute time / audio time (< 1 is faster than real time)"
    )
    return "\n".join(lines)


def plot_bench(result: dict, path: str | Path) -> Path:
    """Per-chunk latency of every run against the real-time line (one chunk's audio duration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    chunk_audio = None
    for r in result["runs"]:
        full = [c for c in r["chunks"] if c["tokens"]]
        ax.plot([c["index"] for c in full], [c["latency_s"] for c in full], marker="o", label=r["name"])
        chunk_audio = r["chunk_audio_s"]
    if chunk_audio:
        ax.axhline(chunk_audio, color="k", linestyle="--", label=f"real time ({chunk_audio:g} s of audio per chunk)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("chunk")
    ax.set_ylabel("latency (s)")
    ax.set_yscale("log")
    ax.set_title(f"per-chunk latency, {result['machine']['cpu_count']} CPUs")
    # Outside the axes: inside, the legend covered the real-time line it names.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bench_schema() -> dict:
    from importlib import resources

    return json.loads(resources.files("melody_edge.runtime").joinpath("bench.schema.json").read_text())
