"""The soak's pass criteria, on synthetic runs (no real soak): each one can fail and is named."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("soak", Path(__file__).parents[2] / "benchmarks" / "soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

CHUNK_S, SR = 2.5, 24000


def fake_run(latencies, rss=None, saturated=0, finite=True) -> dict:
    """A run report shaped like runtime.bench's, with the soak's per-chunk saturation counts."""
    n = len(latencies)
    rss = rss or [500.0] * n
    chunks = [
        {"tokens": 62, "audio_s": CHUNK_S, "samples": int(CHUNK_S * SR), "latency_s": lat, "rss_mb": m, "saturated": 0}
        for lat, m in zip(latencies, rss)
    ]
    chunks[-1]["saturated"] = saturated
    chunks.append({"tokens": 0, "audio_s": 0.07, "samples": 1680, "latency_s": 0.01, "rss_mb": rss[-1], "saturated": 0})
    return {"chunks": chunks, "audio_finite": finite, "audio_peak": 0.5}


def test_a_steady_run_passes():
    s = soak.summarize(fake_run([1.0] * 10 + [1.2] * 10))
    assert s["passed"] and s["failures"] == []


def test_latency_drift_fails():
    s = soak.summarize(fake_run([1.0] * 10 + [1.3] * 10))  # 1.3x the first half's median
    assert not s["passed"]
    assert len(s["failures"]) == 1 and s["failures"][0].startswith("latency drift")


def test_tanh_saturation_fails_although_the_peak_is_bounded():
    samples = 20 * int(CHUNK_S * SR) + 1680
    s = soak.summarize(fake_run([1.0] * 20, saturated=int(0.011 * samples)))
    assert s["saturated_fraction"] == pytest.approx(0.011, rel=1e-3)
    assert len(s["failures"]) == 1 and s["failures"][0].startswith("saturation")
    assert soak.summarize(fake_run([1.0] * 20, saturated=int(0.009 * samples)))["passed"]


def test_non_finite_audio_and_rss_growth_fail_and_are_named():
    s = soak.summarize(fake_run([1.0] * 40, rss=[500.0] * 30 + [530.0] * 10, finite=False))
    assert not s["passed"]
    assert [f.split(" ")[0] for f in s["failures"]] == ["RSS", "non-finite"]
