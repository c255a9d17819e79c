"""Audit fixes: parity.json is checksummed in the manifest; a host missing a target's packages says so."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from conftest import TEST_PRESETS

from melody_edge.export import bundle as bundle_mod
from melody_edge.export.bundle import ExportError, export_bundle, unbuildable_reason
from melody_edge.export.export_all import export_all
from melody_edge.quantization.recipes import load_recipe
from melody_edge.runtime.manifest import BundleError, load_manifest, sha256_file


def test_parity_json_is_listed_with_its_checksum(bundle_factory, tmp_path):
    bundle = bundle_factory("onnx", "fp32")
    manifest = load_manifest(bundle)  # verifies every listed file, parity.json included
    entry = manifest["files"]["parity.json"]
    assert entry == {"sha256": sha256_file(bundle / "parity.json"), "bytes": (bundle / "parity.json").stat().st_size}
    assert list(manifest["files"]) == sorted(manifest["files"])
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    report = json.loads((copy / "parity.json").read_text())
    report["gate"]["passed"] = not report["gate"]["passed"]
    (copy / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    with pytest.raises(BundleError, match=r"parity\.json: sha256 .* does not match"):
        load_manifest(copy)


def missing(*names):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in names else real(name, *args, **kwargs)

    return find_spec


@pytest.mark.parametrize(
    ("absent", "target", "message"),
    [
        ("executorch", "executorch-xnnpack", "executorch is not installed (pip install executorch=="),
        ("executorch", "executorch-coreml", "executorch is not installed"),
        ("onnxruntime", "onnx", "onnxruntime is not installed (pip install 'onnxruntime>="),
        ("onnx", "onnx", "onnx is not installed"),
        ("coremltools", "coreml", "coremltools is not installed (pip install coremltools=="),
        ("coremltools", "executorch-coreml", "coremltools is not installed"),
    ],
)
def test_a_target_whose_packages_are_missing_says_why(monkeypatch, absent, target, message):
    monkeypatch.setattr(importlib.util, "find_spec", missing(absent))
    assert message in unbuildable_reason(target)


def test_missing_package_is_a_clear_error_and_a_skipped_row(tiny_model, monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", missing("onnxruntime", "executorch"))
    with pytest.raises(ExportError, match="target onnx cannot be built on this host: onnxruntime is not installed"):
        export_bundle(tiny_model, "onnx", load_recipe("onnx", "fp32"), tmp_path / "b", presets=TEST_PRESETS)
    rows = export_all(tiny_model, tmp_path / "all", targets=("executorch-xnnpack", "onnx"), log=lambda m: None)
    assert [(r["target"], r["status"]) for r in rows] == [("executorch-xnnpack", "skipped"), ("onnx", "skipped")]
    assert "executorch is not installed" in rows[0]["reason"]
    assert not (tmp_path / "b").exists() and not (tmp_path / "all").exists()


def test_export_all_lets_ctrl_c_through(tiny_model, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_mod, "_export_components", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_all(tiny_model, tmp_path, targets=("onnx",), log=lambda m: None, presets=TEST_PRESETS)
