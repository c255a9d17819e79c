"""The iOS app's Swift sources: every .swift file under ios_demo (core, shell, package manifest, tests)
parsed with tree-sitter-swift (nothing is compiled on Linux), the core kept free of platform imports,
and its RNG constants checked against runtime/rng.py. The shell's names: tests/apps/test_ios_shell.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tree_sitter_swift
from toolchains import syntax_errors

from melody_edge.runtime import rng

ROOT = Path(__file__).resolve().parents[2]
SWIFT_FILES = sorted((ROOT / "ios_demo").rglob("*.swift"))
CORE = ROOT / "ios_demo" / "Core"
PLATFORM_IMPORTS = ("UIKit", "SwiftUI", "CoreML", "AVFoundation", "ExecuTorch", "executorch")


def _errors(path: Path) -> list[str]:
    return syntax_errors(path, tree_sitter_swift.language())


def test_there_is_a_swift_core():
    names = {p.name for p in CORE.glob("*.swift")}
    assert {
        "BundleContract.swift",
        "PortableRng.swift",
        "Sampling.swift",
        "Schedule.swift",
        "StreamingCore.swift",
        "Manifest.swift",
        "LatencyReport.swift",
        "PrefillPieces.swift",
    } <= names


def test_the_shell_and_package_are_parsed_too():
    parsed = {p.relative_to(ROOT / "ios_demo").as_posix() for p in SWIFT_FILES}
    names = (
        "MelodyEdgeApp ContentView GeneratorModel CoreMLRunner ExecuTorchRunner AudioStreamer BundleLibrary DeviceInfo"
    )
    shell = {f"App/{n}.swift" for n in names.split()}
    assert shell | {"Package.swift", "Tests/MelodyEdgeCoreTests/CoreTests.swift"} <= parsed


@pytest.mark.parametrize("path", SWIFT_FILES, ids=[p.relative_to(ROOT / "ios_demo").as_posix() for p in SWIFT_FILES])
def test_swift_parses_without_syntax_errors(path):
    assert _errors(path) == []


def test_parser_reports_a_syntax_error(tmp_path):
    broken = tmp_path / "Broken.swift"
    broken.write_text("func f( -> Int { return 1 }\n")
    assert _errors(broken)


def test_core_has_no_platform_imports():
    for path in CORE.glob("*.swift"):
        imports = re.findall(r"^\s*import\s+(\w+)", path.read_text(), re.M)
        assert not set(imports) & set(PLATFORM_IMPORTS), f"{path.name} imports {imports}"


def test_rng_constants_match_python():
    text = (CORE / "PortableRng.swift").read_text()
    literals = {int(h.replace("_", ""), 16) for h in re.findall(r"0x([0-9A-Fa-f_]+)", text)}
    for name in ("_GOLDEN", "_M1", "_M2"):
        assert int(getattr(rng, name)) in literals, name
    assert {0x100000001B3, 0xD6E8FEB86659FD93} <= literals
    assert f"tokens: UInt64 = {rng.STREAM_TOKENS}" in text and f"noise: UInt64 = {rng.STREAM_NOISE}" in text
