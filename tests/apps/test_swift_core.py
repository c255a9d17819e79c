"""The iOS app's Swift sources: every .swift file under ios_demo (core, shell, package manifest, tests)
parsed with tree-sitter-swift (nothing is compiled on Linux), the core kept free of platform imports,
its RNG constants checked against runtime/rng.py, and its schedule formulas (angle steps, chunk token
ranges) read out of the source, evaluated, and compared with the Python runtime's. The shell's names:
tests/apps/test_ios_shell.py."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import tree_sitter_swift
from toolchains import syntax_errors
from tree_sitter import Language, Parser

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


# --- The schedule: the Swift formulas themselves, evaluated here and compared with the Python runtime. ---

_SWIFT_TOKEN = re.compile(r"\s*(Double\.pi|\d+\.\d+|\d+|[A-Za-z_]\w*|[-+*/(),])")


def _swift_to_python(expr: str, names: set[str], integer: bool) -> str:
    """A Swift arithmetic expression as Python: only numbers, the given names, + - * / ( ), Double.pi,
    Double(...) / Float(...). Integer Swift `/` truncates (operands here are >= 0): Python `//`."""
    out, pos, expr = [], 0, expr.strip()
    while pos < len(expr):
        m = _SWIFT_TOKEN.match(expr, pos)
        assert m, f"cannot read Swift expression at {expr[pos:]!r}"
        tok, pos = m.group(1), m.end()
        if tok == "Double.pi":
            out.append("pi")
        elif tok in ("Double", "Float"):
            out.append({"Double": "float", "Float": "f32"}[tok])
        elif tok == "/":
            out.append("//" if integer else "/")
        elif tok[0].isalpha() or tok[0] == "_":
            assert tok in names, f"unexpected name {tok!r} in {expr!r}"
            out.append(tok)
        else:
            out.append(tok)
    return " ".join(out)


def _eval(expr: str, **values) -> float | int:
    # Safe enough: the expression holds only the tokens _swift_to_python lets through.
    return eval(expr, {"__builtins__": {}, "pi": math.pi, "float": float, "f32": np.float32}, values)


def _swift_function(source: str, name: str):
    for node in _walk(Parser(Language(tree_sitter_swift.language())).parse(source.encode()).root_node):
        ident = node.child_by_field_name("name") if node.type == "function_declaration" else None
        if ident is not None and ident.text.decode() == name:
            return node
    raise AssertionError(f"no func {name}")


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _angle_schedule_swift(source: str):
    """Schedule.swift's angleSchedule as a Python function: `(0..<steps).map { i in let t = A; return B }`."""
    fn = _swift_function(source, "angleSchedule")
    text = fn.text.decode()
    m = re.search(
        r"return \(0\.\.<steps\)\.map \{ i in\s+let t = (?P<t>[^\n]+?)\s+return (?P<w>[^\n]+?)\s+\}\s+\}\s*$", text
    )
    assert m, f"angleSchedule's shape changed:\n{text}"
    t_expr = _swift_to_python(m["t"], {"steps", "i"}, integer=False)
    w_expr = _swift_to_python(m["w"], {"steps", "t"}, integer=False)

    def schedule(steps: int) -> list[float]:
        return [_eval(w_expr, steps=steps, t=_eval(t_expr, steps=steps, i=i)) for i in range(steps)]

    return schedule


def test_swift_angle_schedule_is_the_runtimes():
    from melody_edge.models.diffusion import angle_schedule

    swift = _angle_schedule_swift((CORE / "Schedule.swift").read_text())
    for steps in (1, 2, 5, 10):
        assert swift(steps) == angle_schedule(steps), steps  # same IEEE operations in the same order: exact
    # The core drives the sampler with it, steps taken largest first, target frames restarting at pi/2.
    core = (CORE / "StreamingCore.swift").read_text()
    assert "let schedules = [angleSchedule(settings.stepsFor(0)), angleSchedule(settings.steps)]" in core
    assert "schedule: schedules[min(g, 1)]" in core and "for step in schedule {" in core
    # The first chunk alone may take fewer steps (GenerationSettings.first_steps), as in the runtime.
    text = (CORE / "Schedule.swift").read_text()
    assert "public func stepsFor(_ g: Int) -> Int { g == 0 && firstSteps > 0 ? firstSteps : steps }" in text
    assert "angles[f] = max(angles[f] - wf, 0)" in core
    (half,) = re.findall(r"private let halfPi = (.+)", core)
    assert _eval(_swift_to_python(half, set(), integer=False)) == np.float32(math.pi / 2)


def test_swift_schedule_checks_catch_a_change():
    """The comparisons are not vacuous: a Swift formula with one constant changed no longer matches."""
    from melody_edge.models.diffusion import angle_schedule
    from melody_edge.runtime.backend import StreamSpec

    text = (CORE / "Schedule.swift").read_text()
    for old, new in (("Double(6 * steps)", "Double(5 * steps)"), ("Double(steps - i)", "Double(steps - i + 1)")):
        assert old in text
        assert _angle_schedule_swift(text.replace(old, new))(2) != angle_schedule(2), new
    spec = StreamSpec(24000, 96, 4, 625, 4, 10, 12, 1024, 1024, 7, 512)
    changed = _chunk_token_range_swift(text.replace("(chunk + 1) * chunkFrames", "(chunk + 1) * chunkFrames + 10"))
    assert changed(spec, 1) != spec.chunk_token_range(1)


def _chunk_token_range_swift(source: str):
    fn = _swift_function(source, "chunkTokenRange")
    body = fn.child_by_field_name("body") or next(c for c in fn.children if c.type == "function_body")
    m = re.fullmatch(r"\{\s*\((?P<lo>.+), (?P<hi>.+)\)\s*\}", body.text.decode().strip(), re.S)
    assert m, body.text.decode()
    names = {"chunk", "chunkFrames", "framesPerToken"}
    lo, hi = (_swift_to_python(m[k], names, integer=True) for k in ("lo", "hi"))
    return lambda spec, g: (
        _eval(lo, chunk=g, chunkFrames=spec.chunk_frames, framesPerToken=spec.frames_per_token),
        _eval(hi, chunk=g, chunkFrames=spec.chunk_frames, framesPerToken=spec.frames_per_token),
    )


def test_swift_chunk_token_ranges_are_the_runtimes(tiny_model):
    from melody_edge.runtime.backend import StreamSpec
    from melody_edge.runtime.eager import stream_spec

    swift = _chunk_token_range_swift((CORE / "Schedule.swift").read_text())
    tiny = stream_spec(tiny_model)
    odd = StreamSpec(24000, 96, 4, 7, 3, 3, 12, 1024, 1024, 2, 512)  # 7 frames, 3 per token: 2, 2, 3, ...
    for spec in (tiny, odd):
        for g in range(40):
            assert swift(spec, g) == spec.chunk_token_range(g), (spec.chunk_frames, g)
    assert [swift(tiny, g) for g in range(5)] == [(0, 62), (62, 125), (125, 187), (187, 250), (250, 312)]
    text = (CORE / "Schedule.swift").read_text()
    assert "public var windowFrames: Int { chunkFrames * chunks }" in text
    assert "public var windowTokens: Int { windowFrames / framesPerToken }" in text
    # StreamingCore indexes the window by those ranges as runtime/pipeline.py does: the new chunk's
    # tokens at [lo - base, hi - base), base = the window's first chunk's start; a slide drops that chunk's.
    core = (CORE / "StreamingCore.swift").read_text()
    for line in (
        "let (dropLo, dropHi) = s.chunkTokenRange(firstChunk)",
        "let (lo, hi) = s.chunkTokenRange(g)",
        "let base = s.chunkTokenRange(firstChunk).0",
        "for i in (lo - base)..<(hi - base) {",
        "tokens = Array(tokens[nDrop...]) + [Int64](repeating: s.nullToken, count: nDrop)",
    ):
        assert line in core, line
