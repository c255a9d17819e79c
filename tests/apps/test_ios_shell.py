"""The iOS app (ios_demo): checked without a Swift toolchain (Linux host), by reading its sources.

What can be checked here: the Swift core's manifest messages equal the Kotlin core's, its latency
report writes exactly the keys runtime/bench.schema.json requires (in the Kotlin report's order), the
names the Core ML runner feeds and reads are the contract's and the exporter's, the ExecuTorch runner
calls methods the bundles have, the test vectors in the Swift tests are the Python runtime's, and the
build files agree with pyproject.toml. Syntax of every .swift file: tests/apps/test_swift_core.py.
Nothing here compiles or runs Swift.
"""

from __future__ import annotations

import json
import plistlib
import re
from pathlib import Path

import numpy as np
import tree_sitter_swift
from tree_sitter import Language, Parser

from melody_edge.runtime import bench, rng
from melody_edge.runtime.contract import COMPONENTS, REQUIRED_COMPONENTS

ROOT = Path(__file__).resolve().parents[2]
IOS = ROOT / "ios_demo"
CORE, APP = IOS / "Core", IOS / "App"
KOTLIN = ROOT / "android_demo/core/src/main/kotlin/ai/melodyedge/core"
SHELL_IMPORTS = {"AVFoundation", "CoreML", "ExecuTorch", "Foundation", "MelodyEdgeCore", "SwiftUI", "UIKit"}
_PARSER = Parser(Language(tree_sitter_swift.language()))


def _tree(path: Path):
    return _PARSER.parse(path.read_bytes()).root_node


def _nodes(node, kind: str):
    if node.type == kind:
        yield node
    for child in node.children:
        yield from _nodes(child, kind)


def _function(path: Path, name: str):
    for fn in _nodes(_tree(path), "function_declaration"):
        ident = fn.child_by_field_name("name")
        if ident is not None and ident.text.decode() == name:
            return fn
    raise AssertionError(f"{path.name} has no func {name}")


def _swift_string(node) -> str:
    """A Swift string literal with each interpolation written as {}."""
    parts = []
    for child in node.children:
        if child.type == "line_str_text":
            parts.append(child.text.decode())
        elif child.type == "interpolated_expression":
            parts.append("{}")
        elif child.type == "str_escaped_char":
            parts.append(child.text.decode()[1:])
    return "".join(parts)


def _object_keys(fn) -> list[str]:
    """Keys of the (key, value) tuples of a JSONValue.object literal, in order."""
    keys = []
    for tup in _nodes(fn, "tuple_expression"):
        first = tup.children[1]
        if first.type == "line_string_literal":
            keys.append(_swift_string(first))
    return keys


def _kotlin_templates(text: str, call: str) -> list[str]:
    """String templates passed to ``call(`` in Kotlin source, each $x / ${...} written as {}."""
    out = []
    for m in re.finditer(re.escape(call) + r"\(\s*\"", text):
        i, buf = m.end(), []
        while text[i] != '"':
            if text[i] == "\\":
                buf.append(text[i + 1])
                i += 2
            elif text.startswith("${", i):
                depth, i = 1, i + 2
                while depth:
                    depth += {"{": 1, "}": -1}.get(text[i], 0)
                    i += 1
                buf.append("{}")
            elif text[i] == "$" and (text[i + 1].isalpha() or text[i + 1] == "_"):
                i += 1
                while text[i].isalnum() or text[i] == "_":
                    i += 1
                buf.append("{}")
            else:
                buf.append(text[i])
                i += 1
        out.append("".join(buf))
    return out


def _swift_calls(path: Path, callee: str) -> list[str]:
    """String literals passed first to ``callee(...)`` in a Swift file."""
    out = []
    for call in _nodes(_tree(path), "call_expression"):
        if call.children[0].text.decode() != callee:
            continue
        literals = list(_nodes(call.children[1], "line_string_literal"))
        if literals:
            out.append(_swift_string(literals[0]))
    return out


def _swift_lists(path: Path, enum: str) -> dict[str, object]:
    """``static let NAME = [...]`` / ``= "..."`` of one Swift enum."""
    text = path.read_text()
    body = text[text.index(f"enum {enum} {{") :]
    body = body[: body.index("\n}\n")]
    out: dict[str, object] = {}
    for name, value in re.findall(r"static let (\w+) = (\[[^\]]*\]|\"[^\"]*\")", body):
        out[name] = re.findall(r'"([^"]*)"', value) if value.startswith("[") else value.strip('"')
    return out


def test_the_shell_and_core_files_exist():
    for name in ("Manifest.swift", "LatencyReport.swift", "PrefillPieces.swift"):
        assert (CORE / name).is_file(), name
    for name in ("MelodyEdgeApp.swift", "ContentView.swift", "GeneratorModel.swift", "CoreMLRunner.swift",
                 "ExecuTorchRunner.swift", "AudioStreamer.swift", "Info.plist"):  # fmt: skip
        assert (APP / name).is_file(), name


def test_core_imports_only_foundation_and_shell_imports_are_known():
    for path in CORE.glob("*.swift"):
        assert set(re.findall(r"^\s*import\s+(\w+)", path.read_text(), re.M)) <= {"Foundation"}, path.name
    for path in APP.glob("*.swift"):
        imports = set(re.findall(r"^\s*import\s+(\w+)", path.read_text(), re.M))
        assert imports <= SHELL_IMPORTS, (path.name, imports - SHELL_IMPORTS)
        # ExecuTorch stays in one file: a Core ML-only build can drop it with that file.
        assert ("ExecuTorch" in imports) == (path.name == "ExecuTorchRunner.swift"), path.name


def test_report_keys_are_the_bench_schemas():
    schema = bench.bench_schema()
    run = schema["properties"]["runs"]["items"]
    chunk = run["properties"]["chunks"]["items"]
    path = CORE / "LatencyReport.swift"
    assert _object_keys(_function(path, "toJSON")) == schema["required"]
    assert _object_keys(_function(path, "runJSON")) == run["required"]
    assert _object_keys(_function(path, "chunkJSON")) == chunk["required"]
    assert set(schema["properties"]["machine"]["required"]) <= set(_object_keys(_function(path, "machineJSON")))


def test_report_keys_equal_the_kotlin_reports():
    kotlin = (KOTLIN / "LatencyReport.kt").read_text()
    kotlin = kotlin[kotlin.index("class LatencyReport(") : kotlin.index("fun toJsonText")]
    kt_keys = re.findall(r'"(\w+)" to ', kotlin)  # onChunk's chunk, then the run, then the root
    path = CORE / "LatencyReport.swift"
    swift = [k for f in ("chunkJSON", "runJSON", "toJSON") for k in _object_keys(_function(path, f))]
    assert swift == kt_keys
    assert re.search(r"MUSICLM_NFE_PER_SECOND = 25 \+ 200 \+ 400", path.read_text())
    assert bench.MUSICLM_NFE_PER_SECOND == 25 + 200 + 400


def test_manifest_messages_equal_the_kotlin_cores():
    kotlin = set(_kotlin_templates((KOTLIN / "Manifest.kt").read_text(), "BundleException"))
    swift = set(_swift_calls(CORE / "Manifest.swift", "BundleException"))
    assert len(kotlin) == 13
    assert sorted(kotlin - swift) == []


def test_coreml_runner_names_are_the_contracts():
    names = _swift_lists(APP / "CoreMLRunner.swift", "CoreMLNames")
    assert names["lmFunctions"] == list(COMPONENTS["lm"])
    for comp in ("dpd", "vae_decoder"):
        assert list(COMPONENTS[comp]) == [names["singleFunction"]], comp
    expected = {
        ("lm", "prefill"): ("prefillInputs", "prefillOutputs"),
        ("lm", "decode"): ("decodeInputs", "decodeOutputs"),
        ("dpd", "forward"): ("dpdInputs", "dpdOutputs"),
        ("vae_decoder", "forward"): ("vaeInputs", "vaeOutputs"),
        ("dpd_sampler", "forward"): ("samplerInputs", "samplerOutputs"),
    }
    for (comp, method), (ins, outs) in expected.items():
        assert [names[ins], names[outs]] == [list(x) for x in COMPONENTS[comp][method]], (comp, method)
    # The loader wires each component/function to those lists, and picks LM functions by name.
    text = (APP / "CoreMLRunner.swift").read_text()
    calls = re.findall(r'fn\("(\w+)", (?:"(\w+)"|CoreMLNames\.singleFunction), multi: (\w+), '
                       r"CoreMLNames\.(\w+), CoreMLNames\.(\w+)\)", text)  # fmt: skip
    wired = {(c, m or names["singleFunction"]): (i, o) for c, m, _, i, o in calls}
    assert wired == expected
    assert {c for c, *_ in calls} == {*REQUIRED_COMPONENTS, "dpd_sampler"}
    assert all((multi == "true") == (c == "lm") for c, _, multi, *_ in calls)
    assert "config.functionName = method" in text and "makeState()" in text


def test_coreml_runner_dtypes_and_functions_are_the_exporters(tiny_model):
    from melody_edge.export import coreml_export
    from melody_edge.export.adapters import method_specs

    names = _swift_lists(APP / "CoreMLRunner.swift", "CoreMLNames")
    specs = method_specs(tiny_model, prefill_len=32, steps=2)
    for comp in REQUIRED_COMPONENTS:
        for method, spec in specs[comp].items():
            written = coreml_export._coreml_manifest_spec(spec)  # what a coreml manifest declares
            assert {t["dtype"] for t in written["inputs"]} <= set(names["inputDtypes"]), (comp, method)
    # The multifunction LM package names its functions after the methods (prefill, decode).
    source = Path(coreml_export.__file__).read_text()
    assert "target_function_name=function" in source
    assert re.search(r'"prefill": \(adapters\.LMPrefill\(lm\).*"decode": \(adapters\.LMDecode\(lm\)', source, re.S)


def test_executorch_runner_calls_methods_the_bundles_have():
    text = (APP / "ExecuTorchRunner.swift").read_text()
    loaded = re.findall(r'module\("(\w+)", \["(\w+)"\]\)', text)
    assert {c for c, _ in loaded} == {*REQUIRED_COMPONENTS, "dpd_sampler"}
    for comp, method in loaded:
        assert method in COMPONENTS[comp], (comp, method)
    executed = set(re.findall(r'run\(\w+, "(\w+)"', text))
    assert executed == {m for _, m in loaded}


def test_swift_test_vectors_are_the_runtimes():
    text = (IOS / "Tests/MelodyEdgeCoreTests/CoreTests.swift").read_text()
    uniform = re.search(r"rng\.uniform\(\)\],\s*\[([^\]]+)\]", text).group(1)
    assert [float(x) for x in uniform.split(",")] == [float(x) for x in rng.PortableRng(7, 2).uniform(3)]
    normal = re.search(r"normal\(1\), \[([^\]]+)\]", text).group(1)
    assert np.float32(float(normal)) == rng.PortableRng(7, 2).normal(1)[0]


def test_build_files_agree():
    package = (IOS / "Package.swift").read_text()
    assert '.iOS("18.0")' in package and 'path: "Core"' in package
    info = plistlib.loads((APP / "Info.plist").read_bytes())
    assert info["UIFileSharingEnabled"] is True and info["LSSupportsOpeningDocumentsInPlace"] is True
    # The README pins the ExecuTorch Swift package to the Python executorch the exporter uses.
    version = re.search(r'"executorch==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"swiftpm-{version}" in (IOS / "README.md").read_text()


def test_report_json_is_valid_for_a_sample():
    """The report's shape, written by hand from LatencyReport.swift's keys, passes the schema."""
    import jsonschema

    schema = bench.bench_schema()
    path = CORE / "LatencyReport.swift"
    run = {k: 1.0 for k in _object_keys(_function(path, "runJSON"))}
    run.update(kind="bundle", name="n", backend="coreml", model="m", bundle_bytes=1, speedup_vs_eager=None,
               audio_finite=True, chunks=[{k: 1 for k in _object_keys(_function(path, "chunkJSON"))}])  # fmt: skip
    machine = {k: 1 for k in _object_keys(_function(path, "machineJSON"))}
    report = {"schema_version": 1, "created": "x", "machine": machine, "seconds": 1.0, "runs": [run]}
    jsonschema.validate(json.loads(json.dumps(report)), schema)


def test_core_declarations_the_shell_uses_are_public():
    """The shell is another module (it imports MelodyEdgeCore): what it names must be public there."""
    declared = {}
    for path in CORE.glob("*.swift"):
        pattern = r"^(public )?(?:final |indirect )?(?:struct|class|enum|protocol|func|let)\s+(\w+)"
        for public, name in re.findall(pattern, path.read_text(), re.M):
            declared[name] = bool(public)
    shell = "\n".join(p.read_text() for p in APP.glob("*.swift"))
    used = {name for name in declared if re.search(rf"\b{name}\b", shell)}
    assert {"Manifest", "StreamingCore", "LatencyReport", "ModelRunner", "GenerationSettings"} <= used
    assert sorted(name for name in used if not declared[name]) == []
