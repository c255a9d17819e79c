"""The bundle contract: manifest schema, checksums, atomic writes, a failing gate, user errors."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil

import jsonschema
import pytest
from conftest import TEST_PRESETS

from melody_edge.export import bundle as bundle_mod
from melody_edge.export.bundle import ExportError, export_bundle
from melody_edge.export.export_all import format_rows, load_presets
from melody_edge.export.parity import ParityError
from melody_edge.quantization.recipes import RecipeError, Thresholds, load_recipe
from melody_edge.runtime.manifest import BundleError, load_manifest, schema


@pytest.fixture
def bundle_copy(bundle_factory, tmp_path):
    src = bundle_factory("onnx", "fp32")
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return dst


def test_manifest_validates_and_carries_the_contract(bundle_factory):
    bundle = bundle_factory("onnx", "fp32")
    manifest = json.loads((bundle / "manifest.json").read_text())
    jsonschema.validate(manifest, schema())
    assert manifest["schema_version"] == 1
    assert manifest["stream"]["sample_rate"] == 24000
    assert manifest["sampler"]["steps"] == 2 and len(manifest["sampler"]["schedule"]) == 2
    assert manifest["sampler"]["guidance_scale"] == 2.5
    assert manifest["presets"][0]["tokens"] == TEST_PRESETS[0]["tokens"]
    assert manifest["tools"]["torch"].startswith("2.13")
    assert set(manifest["files"]) == {p.name for p in bundle.iterdir() if p.name != "manifest.json"}
    spec = manifest["components"]["vae_decoder"]["methods"]["forward"]
    r = manifest["stream"]["vae_context_frames"]
    assert spec["inputs"][0]["shape"] == [1, 16, manifest["stream"]["chunk_frames"] + 2 * r]


def test_corrupted_artifact_is_caught_by_sha256(bundle_copy):
    path = bundle_copy / "dpd.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"dpd\.onnx: sha256 .* does not match"):
        load_manifest(bundle_copy)


def test_truncated_and_missing_files_are_named(bundle_copy):
    (bundle_copy / "vae_decoder.onnx").write_bytes(b"")
    with pytest.raises(BundleError, match=r"vae_decoder\.onnx"):
        load_manifest(bundle_copy)
    (bundle_copy / "vae_decoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"vae_decoder\.onnx: listed in the manifest but missing"):
        load_manifest(bundle_copy)


def test_newer_schema_and_invalid_manifest(bundle_copy):
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(BundleError, match="schema version 99 is newer"):
        load_manifest(bundle_copy)
    del manifest["stream"]["chunk_frames"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="invalid manifest at stream"):
        load_manifest(bundle_copy)
    path.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_manifest(bundle_copy)


def test_failing_gate_leaves_no_bundle(tiny_model, tmp_path):
    recipe = load_recipe("onnx", "fp32")
    impossible = dataclasses.replace(recipe, thresholds=Thresholds(1000.0, True, 1.0))
    out = tmp_path / "gated"
    lines: list[str] = []
    with pytest.raises(ParityError, match=r"dpd: SNR .* dB < 1000 dB"):
        export_bundle(
            tiny_model, "onnx", impossible, out, steps=2, presets=TEST_PRESETS, sampler_artifact=False, log=lines.append
        )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial temp directory either
    # Each parity stage is announced: on `paper` the gate runs for many minutes.
    stages = [line.split("(")[0].strip() for line in lines if line.strip().startswith("parity:")]
    assert stages[0].startswith("parity: recording inputs") and stages[-1] == "parity: done"
    assert any("against the float reference" in s for s in stages)


def test_interrupted_and_out_of_disk_exports_leave_nothing(tiny_model, tmp_path, monkeypatch):
    recipe = load_recipe("onnx", "fp32")

    def fail_with(exc):
        def boom(*args, **kwargs):
            raise exc

        return boom

    monkeypatch.setattr(bundle_mod, "_export_components", fail_with(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        export_bundle(tiny_model, "onnx", recipe, tmp_path / "b", presets=TEST_PRESETS)
    monkeypatch.setattr(bundle_mod, "_export_components", fail_with(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(ExportError, match="ran out of disk space"):
        export_bundle(tiny_model, "onnx", recipe, tmp_path / "b", presets=TEST_PRESETS)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tiny_model, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    with pytest.raises(ExportError, match=r"already exists; .* --force"):
        export_bundle(tiny_model, "onnx", load_recipe("onnx", "fp32"), out, presets=TEST_PRESETS)


def test_int4_group_size_error_names_the_layers(tiny_model, tmp_path):
    recipe = load_recipe("onnx", "int4").override(group_size=48)
    with pytest.raises(
        RecipeError, match=r"group size 48 does not divide .*lm\.layers\.0\.attn\.wq \(in_features 64\)"
    ):
        export_bundle(tiny_model, "onnx", recipe, tmp_path / "b", presets=TEST_PRESETS)
    xnn = load_recipe("executorch-xnnpack", "int4").override(group_size=48)
    with pytest.raises(RecipeError, match=r"lm\.layers\.0\.ffn\.w_gate"):
        export_bundle(tiny_model, "executorch-xnnpack", xnn, tmp_path / "c", presets=TEST_PRESETS)
    assert list(tmp_path.iterdir()) == []


def test_recipe_for_another_target_and_bad_steps(tiny_model, tmp_path):
    with pytest.raises(RecipeError, match="is for onnx, not executorch-xnnpack"):
        export_bundle(tiny_model, "executorch-xnnpack", load_recipe("onnx", "fp32"), tmp_path / "b")
    with pytest.raises(ExportError, match="--steps must be >= 1"):
        export_bundle(tiny_model, "onnx", load_recipe("onnx", "fp32"), tmp_path / "b", steps=0, presets=TEST_PRESETS)
    with pytest.raises(ExportError, match="unknown target"):
        export_bundle(tiny_model, "tpu", load_recipe("onnx", "fp32"), tmp_path / "b")


def test_presets_file_is_validated(tiny_model, tmp_path):
    good = tmp_path / "p.json"
    good.write_text(json.dumps(TEST_PRESETS))
    assert load_presets(good, tiny_model)[0]["tokens"] == TEST_PRESETS[0]["tokens"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x", "tokens": [1, 2, 3]}]))
    with pytest.raises(ExportError, match="got 3 conditioning tokens"):
        load_presets(bad, tiny_model)


def test_preset_tokens_come_from_the_text_encoder(tiny_model):
    presets = bundle_mod.preset_tokens(tiny_model)
    assert len(presets) == len(bundle_mod.DEFAULT_PRESETS)
    assert all(len(p["tokens"]) == 12 for p in presets)
    assert presets[0]["tokens"] != presets[1]["tokens"]


def test_summary_table_lists_every_row():
    rows = [
        {
            "target": "onnx",
            "recipe": "fp32",
            "status": "ok",
            "reason": "",
            "bytes": 2e6,
            "seconds": 3.0,
            "parity": "min SNR 130.0 dB (dpd)",
        },
        {
            "target": "onnx",
            "recipe": "int4",
            "status": "failed",
            "reason": "gate failed",
            "bytes": None,
            "seconds": 1.0,
            "parity": None,
        },
    ]
    text = format_rows(rows)
    assert "min SNR 130.0 dB" in text and "gate failed" in text
