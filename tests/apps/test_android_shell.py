"""The Android app's platform shell (android_demo/app), checked on Linux where no Android SDK exists.

The shell is not compiled here. What can be checked for real: it parses as Kotlin (tree-sitter-kotlin);
it imports only names the core declares; ExecuTorchRunner binds the methods and inputs that
runtime/contract.py names, with the dtypes the exporter writes; the figures it reads from the
LatencyReport are fields of runtime/bench.schema.json; executorch-android is the executorch version
that exports the bundles; the core stays a plain JVM module free of Android. And the reason the runner
never calls lm.pte's `prefill`: ExecuTorch's C++ Module (what the Java Module wraps) keeps each method's
KV cache apart, shown below on a real XNNPACK bundle.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import torch
import tree_sitter_kotlin
from toolchains import compile_jar, syntax_errors

from melody_edge.export.adapters import method_specs
from melody_edge.runtime.bench import _bundle_bytes, bench_schema
from melody_edge.runtime.contract import COMPONENTS
from melody_edge.runtime.open import open_bundle

ROOT = Path(__file__).resolve().parents[2]
ANDROID = ROOT / "android_demo"
CORE = ANDROID / "core" / "src" / "main" / "kotlin"
APP = ANDROID / "app" / "src" / "main" / "kotlin" / "ai" / "melodyedge" / "demo"
RUNNER = APP / "ExecuTorchRunner.kt"
APP_FILES = sorted(APP.glob("*.kt"))
KOTLIN_FILES = sorted([*ANDROID.rglob("*.kt"), *ANDROID.rglob("*.kts")])
PLATFORM_PREFIXES = ("android.", "androidx.", "org.pytorch.", "com.facebook.", "kotlinx.coroutines.")

_IMPORT = re.compile(r"^import\s+([\w.]+)(\.\*)?\s*$", re.M)
# A top-level declaration (column 0) that is not private or internal: its name is the last identifier
# before the parameter list / body, after an optional receiver (`fun Any?.obj(`).
_TOP_LEVEL = re.compile(
    r"^(?!private\b|internal\b)(?:(?:public|data|open|abstract|sealed|enum|const|inline|value)\s+)*"
    r"(?:class|object|interface|fun|val|var)\s+(?:<[^>]*>\s*)?(?:[\w.?<>]+\.)?(\w+)",
    re.M,
)


def _parse_errors(path: Path) -> list[str]:
    return syntax_errors(path, tree_sitter_kotlin.language())


def core_public_names() -> set[str]:
    names: set[str] = set()
    for path in CORE.rglob("*.kt"):
        names |= set(_TOP_LEVEL.findall(path.read_text()))
    return names


def _versions() -> dict:
    return tomllib.loads((ANDROID / "gradle" / "libs.versions.toml").read_text())


def _pyproject_pin(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d.split("==", 1)[1] for d in deps if d.startswith(f"{name}==")]
    return pin


def test_the_shell_and_its_build_exist():
    for rel in (
        "settings.gradle.kts",
        "build.gradle.kts",
        "gradle.properties",
        "gradle/libs.versions.toml",
        "core/build.gradle.kts",
        "app/build.gradle.kts",
        "app/src/main/AndroidManifest.xml",
    ):
        assert (ANDROID / rel).is_file(), rel
    assert {p.name for p in APP_FILES} >= {
        "MainActivity.kt",
        "MelodyScreen.kt",
        "MelodyViewModel.kt",
        "ExecuTorchRunner.kt",
        "AudioStreamer.kt",
        "Bundles.kt",
    }


@pytest.mark.parametrize("path", KOTLIN_FILES, ids=[str(p.relative_to(ANDROID)) for p in KOTLIN_FILES])
def test_kotlin_parses_without_syntax_errors(path):
    assert _parse_errors(path) == []


def test_parser_reports_a_syntax_error(tmp_path):
    broken = tmp_path / "Broken.kt"
    broken.write_text("fun f( : Int { return 1 }\n")
    assert _parse_errors(broken)


def test_versions_are_pinned_exactly():
    catalog = _versions()
    for name, version in catalog["versions"].items():
        assert re.fullmatch(r"\d+(\.\d+)+", version), f"{name} = {version!r} is not an exact version"
    # `version.ref = "x"` is TOML for {"version": {"ref": "x"}}.
    for alias, lib in catalog["libraries"].items():
        ref = lib.get("version", {}).get("ref")
        # Compose artifacts take their versions from the pinned BOM; everything else names one.
        assert ref in catalog["versions"] or (ref is None and lib["module"].startswith("androidx.compose.")), alias
    for alias, plugin in catalog["plugins"].items():
        assert plugin["version"]["ref"] in catalog["versions"], alias


def test_executorch_android_is_the_exporting_executorch():
    """A .pte runs on the runtime that wrote it: the AAR, the runner's constant and pyproject must agree."""
    catalog = _versions()
    pin = _pyproject_pin("executorch")
    assert catalog["libraries"]["executorch-android"]["module"] == "org.pytorch:executorch-android"
    assert catalog["versions"]["executorch"] == pin
    assert re.search(rf'const val EXECUTORCH_VERSION = "{re.escape(pin)}"', RUNNER.read_text())
    assert "implementation(libs.executorch.android)" in (ANDROID / "app" / "build.gradle.kts").read_text()


def test_core_is_a_plain_jvm_module_the_app_depends_on():
    core = (ANDROID / "core" / "build.gradle.kts").read_text()
    assert "libs.plugins.kotlin.jvm" in core and "android" not in core.replace("Android", "").lower()
    assert "sourceSets" not in core, "the core keeps the default layout tests/apps compiles with kotlinc"
    settings = (ANDROID / "settings.gradle.kts").read_text()
    assert '":core"' in settings and '":app"' in settings
    assert 'implementation(project(":core"))' in (ANDROID / "app" / "build.gradle.kts").read_text()


def test_core_has_no_platform_imports():
    for path in (ANDROID / "core").rglob("*.kt"):
        for name, _ in _IMPORT.findall(path.read_text()):
            assert not name.startswith(PLATFORM_PREFIXES), f"{path.name} imports {name}"


def test_shell_imports_only_what_the_core_declares():
    public = core_public_names()
    assert {"ModelRunner", "StreamingCore", "Manifest", "LatencyReport", "BundleContract", "parseJson"} <= public
    used = set()
    for path in APP_FILES:
        for name, star in _IMPORT.findall(path.read_text()):
            if name.startswith("ai.melodyedge.core"):
                assert not star, f"{path.name}: import core names one by one, so this test can check them"
                used.add(name.rsplit(".", 1)[1])
                assert name.rsplit(".", 1)[1] in public, f"{path.name} imports {name}, which the core does not declare"
    assert used, "the shell should build on the core"
    contract = (CORE / "ai" / "melodyedge" / "core" / "BundleContract.kt").read_text()
    members = set(re.findall(r"^\s*(?:const\s+)?val\s+(\w+)", contract, re.M))
    for path in APP_FILES:
        for member in re.findall(r"BundleContract\.(\w+)", path.read_text()):
            assert member in members, f"{path.name} uses BundleContract.{member}, which does not exist"


def _bindings(text: str) -> dict[str, tuple[str, str, str]]:
    """ExecuTorchRunner's `x = bind(bundle, numThreads, "comp", "method", BundleContract.NAME)`."""
    found = re.findall(
        r'(\w+) = bind\(bundle, numThreads, "(\w+)", "(\w+)", BundleContract\.(\w+)\)',
        text,
    )
    return {var: (comp, method, const) for var, comp, method, const in found}


def test_runner_binds_the_contract_methods_and_inputs(tiny_model):
    text = RUNNER.read_text()
    bindings = _bindings(text)
    # No `prefill`: see test_executorch_module_keeps_each_methods_cache_apart.
    assert sorted((c, m) for c, m, _ in bindings.values()) == [
        ("dpd", "forward"),
        ("lm", "decode"),
        ("vae_decoder", "forward"),
    ]
    specs = method_specs(tiny_model, prefill_len=8, steps=2)
    for var, (comp, method, const) in bindings.items():
        assert method in COMPONENTS[comp], (comp, method)
        assert const == f"{comp}_{method}_INPUTS".upper(), f"{var} checks its inputs against {const}"
        dtypes = {t.name: t.dtype for t in specs[comp][method].inputs}
        calls = re.findall(rf'\b{var}\.(floats|longs)\("(\w+)"', text)
        assert [name for _, name in calls] == list(COMPONENTS[comp][method][0]), f"{var} sets inputs {calls}"
        for kind, name in calls:
            want = {"float32": "floats", "int64": "longs"}[dtypes[name]]
            assert kind == want, f"{comp}.{method} input {name} is {dtypes[name]}, the runner fills it with {kind}"
    assert '"prefill"' not in text


def test_figures_read_fields_of_the_bench_schema():
    """The screen shows what LatencyReport writes; every field it reads must be one the schema requires."""
    run = bench_schema()["properties"]["runs"]["items"]
    chunk = run["properties"]["chunks"]["items"]
    text = (APP / "MelodyViewModel.kt").read_text()
    run_keys = re.findall(r'num\(run, "(\w+)"\)', text)
    chunk_keys = re.findall(r'num\((?:c|it), "(\w+)"\)', text) + re.findall(r'c\["(\w+)"\]', text)
    assert run_keys and chunk_keys
    assert set(run_keys) <= set(run["required"]), set(run_keys) - set(run["required"])
    assert set(chunk_keys) <= set(chunk["required"]), set(chunk_keys) - set(chunk["required"])


def test_executorch_module_keeps_each_methods_cache_apart(bundle_factory):
    """Why ExecuTorchRunner writes the LM cache through `decode` only.

    lm.pte's `prefill` and `decode` share the KV cache as mutable buffers (export/executorch_export.py).
    The Python Runtime API plans one memory arena for all of a program's methods, so the two see one
    cache. ExecuTorch's C++ Module, which the Java Module wraps (extension/android/jni/jni_layer.cpp,
    built without share_memory_arenas) and which `_load_for_executorch` also builds, gives each method
    its own: a `decode` after a `prefill` then reads a cache the prefill never wrote. Decoding every id
    matches the shared-cache result. If the second assertion ever fails, ExecuTorch shares arenas by
    default and the runner could prefill again.
    """
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    bundle = Path(bundle_factory("executorch-xnnpack", "fp32"))
    backend, manifest = open_bundle(bundle)
    stream = manifest["stream"]
    n = stream["lm_prefill_len"]
    ids = torch.arange(n, dtype=torch.long) * 7 % stream["vocab_size"]
    token = 3
    backend.lm_reset()
    backend.lm_prefill(ids, 0)
    want = backend.lm_decode(token, n)  # one arena: decode sees what prefill wrote

    def decode(module, tok: int, pos: int) -> torch.Tensor:
        return module.run_method("decode", [torch.tensor([[tok]]), torch.tensor([pos])])[0][0]

    module = _load_for_executorch(str(bundle / "lm.pte"))
    for pos, tok in enumerate(ids.tolist()):
        decode(module, tok, pos)
    torch.testing.assert_close(decode(module, token, n), want, rtol=1e-3, atol=1e-3)

    split = _load_for_executorch(str(bundle / "lm.pte"))
    split.run_method("prefill", [ids.reshape(1, -1), torch.tensor([0])])
    apart = decode(split, token, n)
    assert (apart - want).abs().max() > 1e-2, "prefill and decode now share the cache in ExecuTorch's Module"


# Bundles.kt uses only the core and java.*, so it compiles and runs on the JVM: this prints one line per folder.
BUNDLE_CHECK_MAIN = """
import ai.melodyedge.demo.Bundles
import java.io.File

fun main(args: Array<String>) {
    for (d in Bundles.list(listOf(File(args[0])))) {
        val line = try {
            Bundles.open(d).let { "OK ${it.runName} ${it.bytes} ${it.manifest.presets.size}" }
        } catch (e: Exception) {
            "ERR ${e.message}"
        }
        println("${d.name}: $line")
    }
}
"""


@pytest.fixture(scope="module")
def bundles_jar(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bundles_kt")
    (work / "Check.kt").write_text(BUNDLE_CHECK_MAIN)
    return compile_jar([CORE, APP / "Bundles.kt", work / "Check.kt"], work / "check.jar")


def test_bundle_checks_accept_a_real_bundle_and_name_what_is_wrong(bundles_jar, bundle_factory, tmp_path):
    good = Path(bundle_factory("executorch-xnnpack", "fp32"))
    for name in ("good", "truncated", "newer", "no_manifest"):
        shutil.copytree(good, tmp_path / name)
    shutil.copytree(Path(bundle_factory("onnx", "fp32")), tmp_path / "onnx")
    dpd = tmp_path / "truncated" / "dpd.pte"
    dpd.write_bytes(dpd.read_bytes()[:-10])
    manifest = tmp_path / "newer" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"schema_version": 1', '"schema_version": 2', 1))
    (tmp_path / "no_manifest" / "manifest.json").unlink()
    proc = subprocess.run(
        ["java", "-cp", str(bundles_jar), "CheckKt", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["good"] == f"OK executorch-xnnpack/fp32 {_bundle_bytes(str(good))} 1", lines["good"]
    assert "dpd.pte: sha256" in lines["truncated"] and "truncated or altered" in lines["truncated"]
    assert "schema 2 is newer than this app understands" in lines["newer"]
    assert "manifest.json not found" in lines["no_manifest"]
    assert "holds a 'onnx' bundle" in lines["onnx"] and "--target executorch-xnnpack" in lines["onnx"]
