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


def test_each_bundle_is_compared_with_its_own_models_eager_run(tmp_path, monkeypatch):
    import json

    from melody_edge.runtime import bench as bench_module

    # Four bundles of three models (only their manifests matter here): one eager run per model, and each
    # bundle's speed-up divides by its own model's eager time. "g" has a's weights and a guided LM (two
    # rows per LM call), so it is timed against a guided eager run.
    weights = {"a1": "w-a", "a2": "w-a", "b": "w-b", "g": "w-a"}
    for name, sha in weights.items():
        (tmp_path / name).mkdir()
        sampler = {"lm_guidance_scale": 3.0} if name == "g" else {}
        (tmp_path / name / "manifest.json").write_text(
            json.dumps({"model": {"weights_sha256": sha}, "sampler": sampler})
        )
    monkeypatch.setattr(
        bench_module, "load_manifest", lambda p: json.loads((tmp_path / p / "manifest.json").read_text())
    )
    rtf = {
        ("eager", "a1"): 2.0,
        ("eager", "b"): 8.0,
        ("eager", "g"): 3.0,
        ("bundle", "a1"): 1.0,
        ("bundle", "a2"): 0.5,
        ("bundle", "b"): 4.0,
        ("bundle", "g"): 1.5,
    }

    def fake_run(kind, path, *args):
        return {"kind": kind, "bundle": path, "real_time_factor": rtf[(kind, path)]}

    monkeypatch.setattr(bench_module, "_run_one", fake_run)
    monkeypatch.chdir(tmp_path)
    runs = bench(["a1", "a2", "b", "g"], isolate=False)["runs"]
    assert [(r["kind"], r["bundle"]) for r in runs] == [
        ("eager", "a1"),
        ("eager", "b"),
        ("eager", "g"),
        ("bundle", "a1"),
        ("bundle", "a2"),
        ("bundle", "b"),
        ("bundle", "g"),
    ]
    assert [r["speedup_vs_eager"] for r in runs] == [1.0, 1.0, 1.0, 2.0, 4.0, 2.0, 2.0]
    assert (
        bench_module._run_name("bundle", {"target": "onnx", "recipe": {"name": "fp32"}, "sampler": {}}) == "onnx/fp32"
    )
    guided = {"target": "onnx", "recipe": {"name": "fp32"}, "sampler": {"lm_guidance_scale": 3.0}}
    assert bench_module._run_name("eager", guided) == "eager (PyTorch) lm-cfg 3"
