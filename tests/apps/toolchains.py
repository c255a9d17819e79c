"""What the app tests share: tree-sitter syntax checks and the JVM Kotlin compiler (kotlinc + java)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tree_sitter import Language, Parser

NPM_KOTLINC = Path("/usr/lib/node_modules/kotlin-compiler/bin/kotlinc")
KOTLINC_MISSING = "kotlinc/java not found (npm install -g kotlin-compiler@2.4.20; .ci/run installs it)"


def syntax_errors(path: Path, language_ptr) -> list[str]:
    """ERROR and MISSING nodes of ``path`` under a tree-sitter grammar, as ``file:line:col type``."""
    tree = Parser(Language(language_ptr)).parse(path.read_bytes())
    bad: list[str] = []

    def walk(node) -> None:
        if node.type == "ERROR" or node.is_missing:
            bad.append(f"{path.name}:{node.start_point[0] + 1}:{node.start_point[1] + 1} {node.type}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return bad


def find_kotlinc() -> str | None:
    for cand in (os.environ.get("KOTLINC"), shutil.which("kotlinc"), str(NPM_KOTLINC)):
        if cand and Path(cand).is_file() and shutil.which("java"):
            return cand
    return None


def compile_jar(sources: list[Path], jar: Path) -> Path:
    """kotlinc ``sources`` into a runnable jar (with the Kotlin runtime); skips when kotlinc is absent."""
    kotlinc = find_kotlinc()
    if kotlinc is None:
        pytest.skip(KOTLINC_MISSING)
    proc = subprocess.run(
        [kotlinc, *map(str, sources), "-include-runtime", "-d", str(jar)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return jar
