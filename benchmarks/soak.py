"""Soak: stream minutes of continued audio from a bundle; RSS must stay flat, latency stable, audio finite.

    python benchmarks/soak.py out/bench/edge/onnx-int8 --minutes 5 --json out/bench/soak.json --plot out/bench/soak.png

Pass: RSS growth under 5 % after the first minute; second-half median chunk latency at most 1.25x the
first half's; under 1 % of samples at |x| > 0.99 (the VAE ends in tanh, so a diverging stream shows up as
saturation, not as a large peak); every sample finite. A failure names the criterion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from melody_edge.runtime.bench import SATURATION, run_isolated

MAX_RSS_GROWTH_PCT = 5.0
MAX_LATENCY_DRIFT = 1.25  # second-half median chunk latency / first-half median
MAX_SATURATED_FRACTION = 0.01


def summarize(run: dict) -> dict:
    chunks = [c for c in run["chunks"] if c["tokens"]]
    t = np.cumsum([c["audio_s"] for c in chunks])
    rss = np.array([c["rss_mb"] for c in chunks])
    lat = np.array([c["latency_s"] for c in chunks])
    after = rss[t >= 60.0] if (t >= 60.0).any() else rss[-1:]
    growth = float((after.max() - after[0]) / after[0] * 100)
    half = len(lat) // 2
    samples = sum(c["samples"] for c in run["chunks"])
    summary = {
        "audio_s": float(t[-1]),
        "rss_after_first_minute_mb": float(after[0]),
        "rss_max_mb": float(rss.max()),
        "rss_growth_after_first_minute_pct": growth,
        "latency_p50_first_half_s": float(np.median(lat[:half])) if half else None,
        "latency_p50_second_half_s": float(np.median(lat[half:])),
        "latency_p95_s": float(np.percentile(lat, 95)),
        "all_finite": run["audio_finite"],
        "audio_peak": run["audio_peak"],
        "saturated_fraction": sum(c["saturated"] for c in run["chunks"]) / samples if samples else 0.0,
    }
    summary["failures"] = failures(summary)
    summary["passed"] = not summary["failures"]
    return summary


def failures(s: dict) -> list[str]:
    """The pass criteria; one line per criterion that failed."""
    out = []
    if not s["rss_growth_after_first_minute_pct"] < MAX_RSS_GROWTH_PCT:
        out.append(
            f"RSS grew {s['rss_growth_after_first_minute_pct']:.2f} % after the first minute "
            f"(limit {MAX_RSS_GROWTH_PCT:g} %)"
        )
    first, second = s["latency_p50_first_half_s"], s["latency_p50_second_half_s"]
    if first is None:
        out.append("latency drift: fewer than 2 chunks, nothing to compare")
    elif not second <= MAX_LATENCY_DRIFT * first:
        out.append(
            f"latency drift: second-half median chunk latency {second:.3f} s > {MAX_LATENCY_DRIFT:g}x "
            f"the first half's {first:.3f} s"
        )
    if not s["saturated_fraction"] < MAX_SATURATED_FRACTION:
        out.append(
            f"saturation: {s['saturated_fraction'] * 100:.2f} % of samples have |x| > {SATURATION:g} "
            f"(limit {MAX_SATURATED_FRACTION * 100:g} %)"
        )
    if not s["all_finite"]:
        out.append("non-finite audio (NaN/Inf)")
    return out


def plot(run: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chunks = [c for c in run["chunks"] if c["tokens"]]
    t = np.cumsum([c["audio_s"] for c in chunks])
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.plot(t, [c["rss_mb"] for c in chunks])
    a.set_ylabel("RSS (MiB)")
    b.plot(t, [c["latency_s"] for c in chunks], marker=".")
    b.axhline(run["chunk_audio_s"], color="k", linestyle="--", label="real time")
    b.set_ylabel("chunk latency (s)")
    b.set_xlabel("audio generated (s)")
    b.legend()
    a.set_title(f"soak: {run['name']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    run = run_isolated("bundle", str(args.bundle), args.minutes * 60, None, args.threads, 0, True, timeout=6 * 3600)
    summary = summarize(run)
    print(json.dumps(summary, indent=2))
    print("soak: PASSED" if summary["passed"] else "soak: FAILED: " + "; ".join(summary["failures"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "run": run}, indent=2, default=float) + "\n")
    if args.plot:
        plot(run, args.plot)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
