"""One contract: runtime/contract.py. The apps' constants files, the exporter and real bundles must agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from melody_edge.export.adapters import method_specs
from melody_edge.runtime.contract import COMPONENTS, ONNX_LM_STATE, REQUIRED_COMPONENTS, flat_constants
from melody_edge.runtime.open import open_bundle

ROOT = Path(__file__).resolve().parents[2]
KOTLIN = ROOT / "android_demo/core/src/main/kotlin/ai/melodyedge/core/BundleContract.kt"
SWIFT = ROOT / "ios_demo/Core/BundleContract.swift"
_DECL = re.compile(r"^\s*(?:const\s+val|val|static\s+let)\s+(\w+)\s*(?::[^=]+)?=\s*(.+?)\s*$", re.M)


def _value(text: str) -> object:
    text = text.strip()
    if text.startswith(("listOf(", "[")):
        inner = text[text.index("(") + 1 : -1] if text.startswith("listOf(") else text[1:-1]
        return re.findall(r'"([^"]*)"', inner)
    if text.startswith('"'):
        return text.strip('"')
    return int(text)


def declared_constants(path: Path) -> dict[str, object]:
    """``NAME = value`` declarations of a Kotlin object / Swift enum of constants."""
    return {name: _value(value) for name, value in _DECL.findall(path.read_text())}


@pytest.mark.parametrize("path", [KOTLIN, SWIFT], ids=["kotlin", "swift"])
def test_app_contract_files_mirror_the_python_contract(path):
    got, want = declared_constants(path), flat_constants()
    assert sorted(set(want) - set(got)) == [], f"{path.name} lacks these contract names"
    assert sorted(set(got) - set(want)) == [], f"{path.name} declares names the contract does not have"
    for name in want:
        assert got[name] == want[name], f"{path.name}: {name} = {got[name]!r}, contract {want[name]!r}"


def test_exporter_method_specs_use_the_contract_names(tiny_model):
    specs = method_specs(tiny_model, prefill_len=32, steps=2)
    assert set(specs) == set(COMPONENTS)
    for comp, methods in specs.items():
        assert set(methods) == set(COMPONENTS[comp]), comp
        for name, spec in methods.items():
            inputs, outputs = COMPONENTS[comp][name]
            assert tuple(t.name for t in spec.inputs) == inputs, (comp, name)
            assert tuple(t.name for t in spec.outputs) == outputs, (comp, name)


@pytest.mark.parametrize("target", ["onnx", "executorch-xnnpack"])
def test_exported_bundles_follow_the_contract(bundle_factory, target):
    _, manifest = open_bundle(bundle_factory(target, "fp32"))
    want = flat_constants()
    assert manifest["schema_version"] == want["SCHEMA_VERSION"] and manifest["format"] == want["FORMAT"]
    assert list(manifest["stream"]) == want["STREAM_KEYS"]
    assert set(want["SAMPLER_KEYS"]) <= set(manifest["sampler"])
    assert set(REQUIRED_COMPONENTS) <= set(manifest["components"])
    for comp, entry in manifest["components"].items():
        for method, spec in entry["methods"].items():
            inputs, outputs = COMPONENTS[comp][method]
            extra_in, extra_out = (
                ([ONNX_LM_STATE[0]], [ONNX_LM_STATE[1]]) if (target, comp) == ("onnx", "lm") else ([], [])
            )
            assert [t["name"] for t in spec["inputs"]] == [*inputs, *extra_in], (comp, method)
            assert [t["name"] for t in spec["outputs"]] == [*outputs, *extra_out], (comp, method)
    for preset in manifest["presets"]:
        assert list(preset) == want["PRESET_KEYS"]
