"""``data synth``: a few real clips rendered with FluidSynth, deterministic, split by work, clear errors."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
import soundfile as sf

from melody_edge.training import data_synth
from melody_edge.training.data_synth import DataSynthError, synthesize_dataset
from melody_edge.training.midi import Note, write_midi
from melody_edge.training.synth_catalog import CAPTION_VARIANTS, caption_variants

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None,
    reason="FluidSynth is not installed (apt-get install fluidsynth timgm6mb-soundfont; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    if shutil.which("fluidsynth") is None:
        pytest.skip("FluidSynth is not installed (apt-get install fluidsynth timgm6mb-soundfont)")
    out = tmp_path_factory.mktemp("synth") / "set"
    synthesize_dataset(out, hours=8 * 2.0 / 3600, seed=3, clip_seconds=2.0)
    return out


@needs_fluidsynth
def test_clips_index_and_summary(small_set):
    rows = [json.loads(line) for line in (small_set / "index.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    summary = json.loads((small_set / "dataset.json").read_text())
    assert summary["clips"] == 8 and summary["sample_rate"] == 24000 and summary["soundfont_sha256"]
    for r in rows:
        audio, rate = sf.read(str(small_set / r["path"]), dtype="float32")
        assert rate == 24000 and audio.ndim == 1 and audio.shape[0] == 48000
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.1
        assert r["split"] in ("train", "validation")
        assert r["mode"] in ("major", "minor") and 0 <= r["tonic_pc"] < 12
        assert r["key"] in r["caption"] and str(r["tempo_bpm"]) in r["caption"]
        assert r["instruments"] and all(isinstance(i, str) for i in r["instruments"])
    # A work never straddles the split.
    by_work: dict[str, set] = {}
    for r in rows:
        by_work.setdefault(r["work"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_work.values())


@needs_fluidsynth
def test_deterministic_for_a_seed(small_set, tmp_path):
    again = tmp_path / "again"
    synthesize_dataset(again, hours=8 * 2.0 / 3600, seed=3, clip_seconds=2.0)
    assert (again / "index.jsonl").read_bytes() == (small_set / "index.jsonl").read_bytes()


def test_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(DataSynthError, match="--hours must be > 0"):
        synthesize_dataset(tmp_path / "a", hours=0)
    with pytest.raises(DataSynthError, match="--clip-seconds must be > 0"):
        synthesize_dataset(tmp_path / "a", hours=1, clip_seconds=0)
    with pytest.raises(DataSynthError, match=r"SoundFont .* not found"):
        data_synth.find_soundfont(tmp_path / "missing.sf2")
    monkeypatch.setattr(data_synth.shutil, "which", lambda name: None)
    with pytest.raises(DataSynthError, match="apt-get install fluidsynth"):
        synthesize_dataset(tmp_path / "b", hours=0.01)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataSynthError, match="--overwrite"):
        synthesize_dataset(tmp_path / "full", hours=0.01)


def test_work_ids_are_unique_within_a_collection():
    pytest.importorskip("music21", reason="music21 is missing (pip install -e '.[data]')")
    from melody_edge.training.synth_catalog import COLLECTIONS

    for name in ("string-quartets", "bach-chorales"):
        sources = data_synth.list_sources(COLLECTIONS[name])
        names = [data_synth.source_name(s) for s in sources]
        assert len(set(names)) == len(names), name  # quartets: movement1.mxl of many opera
    assert "bwv437.mxl" in names  # a file directly under its composer keeps its bare name


def test_midi_writer_header_and_events(tmp_path):
    path = tmp_path / "t.mid"
    write_midi(path, [Note(0.0, 1.0, 60, 90, 0), Note(1.0, 0.5, 64, 90, 1)], {0: 40, 1: 42}, bpm=120)
    raw = path.read_bytes()
    assert raw[:4] == b"MThd" and struct.unpack(">IHHH", raw[4:14]) == (6, 0, 1, 480)
    assert raw[14:18] == b"MTrk" and raw.endswith(b"\xff\x2f\x00")
    assert bytes([0xC0, 40]) in raw and bytes([0x90, 60, 90]) in raw and bytes([0x81, 64, 0]) in raw


def test_caption_variants_carry_the_key():
    facts = {
        "key": "G", "mode": "minor", "instruments": ["violin", "cello"], "tempo_bpm": 96,
        "meter": "3/4", "style": "folk song", "drums": False,
    }  # fmt: skip
    variants = caption_variants(facts)
    assert len(variants) == CAPTION_VARIANTS and len(set(variants)) == CAPTION_VARIANTS
    assert all("G minor" in v for v in variants[:7])


@needs_fluidsynth
def test_cli_logs_progress_lines_when_not_a_terminal(tmp_path):
    from click.testing import CliRunner

    from melody_edge.cli import main

    out = tmp_path / "set"
    result = CliRunner().invoke(
        main, ["data", "synth", "--out", str(out), "--hours", str(3 * 2.0 / 3600), "--clip-seconds", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("clips ")]
    assert lines and lines[-1].startswith("clips 3/3 (100 %)"), result.output
    assert "ETA" in lines[0]
