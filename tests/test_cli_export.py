"""``melody-edge export`` and ``melody-edge quantize --report`` through the command line (click's CliRunner)."""

import json
import re

import pytest
import torch
from click.testing import CliRunner
from conftest import TEST_PRESETS

from melody_edge.cli import main
from melody_edge.export import bundle as bundle_mod
from melody_edge.export import export_all as export_all_mod
from melody_edge.export.bundle import HOST_TARGETS
from melody_edge.export.parity import ParityError
from melody_edge.quantization.recipes import TARGETS, available_recipes


def invoke(*args):
    # Exceptions are caught, so a crash shows up as result.exception instead of failing inside click.
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result, *needles):
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a ClickException, not a crash
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


@pytest.fixture
def presets_file(tmp_path):
    path = tmp_path / "presets.json"
    path.write_text(json.dumps(TEST_PRESETS))
    return path


@pytest.mark.parametrize("command", ["export", "quantize"])
def test_unknown_target_lists_the_valid_ones(tmp_path, command):
    extra = ["--out", tmp_path / "b"] if command == "export" else ["--report"]
    result = invoke(command, "--config", "tiny", "--target", "tpu", "--recipe", "int8", *extra)
    assert_clean_error(result, "unknown target 'tpu'", *TARGETS)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("command", ["export", "quantize"])
def test_unknown_recipe_lists_the_valid_ones(tmp_path, command):
    extra = ["--out", tmp_path / "b"] if command == "export" else ["--report"]
    result = invoke(command, "--config", "tiny", "--target", "onnx", "--recipe", "int2", *extra)
    assert_clean_error(result, "unknown recipe 'int2'", "valid recipes: " + ", ".join(available_recipes("onnx")))


def test_existing_out_is_refused_without_force(tmp_path, presets_file, monkeypatch):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["export", "--config", "tiny", "--target", "onnx", "--recipe", "fp32", "--out", out]
    result = invoke(*args, "--presets", presets_file)
    assert_clean_error(result, "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"

    # With --force the export gets past that check (stopped here at its first real step).
    def reached(*a, **k):
        raise RuntimeError("reached the export")

    monkeypatch.setattr(bundle_mod, "_export_components", reached)
    result = invoke(*args, "--presets", presets_file, "--force")
    assert isinstance(result.exception, RuntimeError) and "reached the export" in str(result.exception)
    assert (out / "keep.txt").read_text() == "mine"  # a failed export leaves the old bundle alone


def fake_export(failures: dict, calls: list):
    def export_bundle(model, target, recipe, out, log=print, **options):
        calls.append((target, recipe.name, options["presets"]))
        if (target, recipe.name) in failures:
            raise failures[target, recipe.name]
        return {"files": {"x.bin": {"sha256": "0" * 64, "bytes": 2_000_000}}}

    return export_bundle


def table_rows(output: str) -> dict:
    """(target, recipe) -> (status, rest of the line) from the summary table under its header."""
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if re.match(r"target\s+recipe\s+status\s+MB", line))
    rows = {}
    for line in lines[header + 1 :]:
        target, recipe, status, rest = line.split(None, 3)
        rows[target, recipe] = (status, rest)
    return rows


@pytest.mark.parametrize("fail", [False, True])
def test_all_prints_a_row_per_pair_and_fails_when_a_pair_fails(tmp_path, presets_file, monkeypatch, fail):
    failures = {}
    if fail:
        # Any exception, not only the export's own errors, fails that pair and nothing else.
        failures = {
            ("onnx", "int8"): RuntimeError("boom\nsecond line of a long message"),
            ("executorch-xnnpack", "int4"): ParityError("parity gate failed: dpd 12.0 dB"),
        }
    calls = []
    monkeypatch.setattr(export_all_mod, "export_bundle", fake_export(failures, calls))
    monkeypatch.setattr(export_all_mod, "unbuildable_reason", lambda t: "not here" if t == "coreml" else None)
    result = invoke("export", "--config", "tiny", "--all", "--out", tmp_path / "all", "--presets", presets_file)

    assert "Traceback" not in result.output
    assert result.exit_code == (1 if fail else 0), result.output
    expected = {(t, r) for t in HOST_TARGETS if t != "coreml" for r in available_recipes(t)}
    assert {(t, r) for t, r, _ in calls} == expected
    assert all(p == TEST_PRESETS for _, _, p in calls)
    rows = table_rows(result.stdout)
    assert set(rows) == expected | {("coreml", "*")}
    assert rows["coreml", "*"][0] == "skipped" and rows["coreml", "*"][1].endswith("not here")
    for pair in expected - set(failures):
        assert rows[pair][0] == "ok" and rows[pair][1].startswith("2.00"), rows[pair]
    if fail:
        assert rows["onnx", "int8"][0] == "failed" and rows["onnx", "int8"][1].endswith("RuntimeError: boom")
        assert rows["executorch-xnnpack", "int4"][1].endswith("parity gate failed: dpd 12.0 dB")
        assert "second line of a long message" in result.output  # the log has all of it


def test_all_stops_on_ctrl_c(tmp_path, presets_file, monkeypatch):
    calls = []
    monkeypatch.setattr(export_all_mod, "export_bundle", fake_export({("onnx", "fp32"): KeyboardInterrupt()}, calls))
    monkeypatch.setattr(export_all_mod, "unbuildable_reason", lambda t: None)
    result = invoke("export", "--config", "tiny", "--all", "--out", tmp_path / "all", "--presets", presets_file)
    assert result.exit_code == 130 and "interrupted" in result.output
    assert calls[-1][:2] == ("onnx", "fp32")  # nothing after the interrupted pair


@pytest.fixture
def one_thread():
    # The tiny model's one-layer-at-a-time sweep is many small matmuls: with two threads on a busy 2-core
    # machine it took 130 s, with one 9 s.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_quantize_report_prints_per_layer_rows(tmp_path, one_thread):
    json_out = tmp_path / "sens.json"
    args = ["quantize", "--config", "tiny", "--target", "onnx", "--recipe", "int8", "--report"]
    result = invoke(*args, "--top", "5", "--json", json_out)
    assert result.exit_code == 0, result.output
    report = json.loads(json_out.read_text())
    assert set(report) == {"lm", "dpd"}
    out = result.stdout
    assert "per-layer sensitivity, recipe onnx/int8" in out
    for comp, layers in report.items():
        block = re.split(r"\n  (?=\S)", out.split(f"  {comp}: layer")[1])[0]
        rows = re.findall(rf"^\s+({comp}\.\S+)\s+(\d+)\s+(-?[\d.]+)", block, re.M)
        assert len(rows) == 5, block  # --top
        assert [name for name, _, _ in rows] == [r["layer"] for r in layers if r["params"] is not None][:5]
        snrs = [float(s) for _, _, s in rows]
        assert all(s > 0 for s in snrs)
        assert "(all quantized)" in block
    # The recipe's float layers are marked where they rank (lm.head is the LM's most sensitive layer).
    assert re.search(r"lm\.head\s+\d+\s+[\d.]+\s+\(kept float by recipe\)", out)
