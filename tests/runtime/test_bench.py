"""The latency report: its JSON schema, the eager reference beside every bundle, the plot."""

from __future__ import annotations

import jsonschema

from melody_edge.runtime.bench import bench, bench_schema, format_bench, plot_bench


def test_bench_report_follows_its_schema(bundle_factory, tmp_path):
    bundle = bundle_factory("onnx", "fp32")
    result = bench([bundle], seconds=2.5, isolate=False)
    jsonschema.validate(result, bench_schema())
    eager, onnx = result["runs"]
    assert eager["kind"] == "eager" and eager["speedup_vs_eager"] == 1.0
    assert onnx["backend"] == "onnx" and onnx["bundle_bytes"] > 0
    assert onnx["audio_finite"] and onnx["nfe_per_10s"] < onnx["musiclm_nfe_per_10s"]
    assert "onnx/fp32" in format_bench(result)
    png = plot_bench(result, tmp_path / "latency.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_isolated_run_measures_its_own_process(bundle_factory):
    result = bench([bundle_factory("onnx", "fp32")], seconds=2.5, include_eager=False)
    (run,) = result["runs"]
    assert run["peak_rss_mb"] > 50 and run["time_to_first_audio_s"] > 0
    jsonschema.validate(result, bench_schema())
