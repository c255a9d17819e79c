"""``data merge``: every clip once, unique ids, splits and facts kept, clear errors, nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from melody_edge.cli import main
from melody_edge.training.data import DataError, read_index
from melody_edge.training.data_merge import merge_datasets


def _make_set(root, name, splits, rate=24000, seed=0):
    d = root / name
    (d / "audio").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i, split in enumerate(splits):
        cid = f"{i:06d}"
        sf.write(str(d / "audio" / f"{cid}.wav"), rng.uniform(-0.5, 0.5, rate // 10).astype("float32"), rate)
        rows.append({"id": cid, "path": f"audio/{cid}.wav", "caption": f"{name} clip {i}", "split": split,
                     "collection": "folk-songs", "tonic_pc": i % 12})  # fmt: skip
    (d / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"clips": len(rows), "seconds": 0.1 * len(rows), "sample_rate": rate, "clip_seconds": 0.1, "seed": seed}
    (d / "dataset.json").write_text(json.dumps(summary))
    return d


def test_merge_keeps_every_clip_with_unique_ids(tmp_path):
    a = _make_set(tmp_path, "a", ["train", "train", "validation"], seed=1)
    b = _make_set(tmp_path, "b", ["train", "validation"], seed=2)
    summary = merge_datasets([a, b], tmp_path / "ab")
    assert summary.clips == 5 and summary.splits == {"train": 3, "validation": 2}
    clips = read_index(tmp_path / "ab")
    assert len({c.id for c in clips}) == 5
    # Same ids in both sources ("000000"): the merged ones differ and point at the right audio.
    originals = read_index(a) + read_index(b)
    for merged, orig in zip(clips, originals, strict=True):
        assert merged.caption == orig.caption and merged.split == orig.split
        assert merged.facts["tonic_pc"] == orig.facts["tonic_pc"]
        assert merged.path.read_bytes() == orig.path.read_bytes()
    meta = json.loads((tmp_path / "ab" / "dataset.json").read_text())
    assert meta["clips"] == 5 and meta["sample_rate"] == 24000
    assert [m["seed"] for m in meta["merged_from"]] == [1, 2]


def test_merge_errors_name_the_problem(tmp_path):
    a = _make_set(tmp_path, "a", ["train"])
    b = _make_set(tmp_path, "b", ["train"], rate=16000)
    with pytest.raises(DataError, match="sample_rate"):
        merge_datasets([a, b], tmp_path / "ab")
    with pytest.raises(DataError, match="at least two"):
        merge_datasets([a], tmp_path / "ab")
    with pytest.raises(DataError, match="listed twice"):
        merge_datasets([a, a], tmp_path / "ab")
    c = _make_set(tmp_path, "c", ["train"])
    (c / "audio" / "000000.wav").unlink()
    with pytest.raises(DataError, match="missing"):
        merge_datasets([a, c], tmp_path / "ac")
    # Nothing half-written: neither the target nor a temporary directory is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]
    merge_datasets([a, _make_set(tmp_path, "d", ["validation"])], tmp_path / "ad")
    with pytest.raises(DataError, match="--overwrite"):
        merge_datasets([a, c], tmp_path / "ad")


def test_cli_merge(tmp_path):
    a = _make_set(tmp_path, "a", ["train", "validation"])
    b = _make_set(tmp_path, "b", ["train"])
    res = CliRunner().invoke(main, ["data", "merge", str(a), str(b), "--out", str(tmp_path / "ab")])
    assert res.exit_code == 0, res.output
    assert "3 clips" in res.output and "'train': 2" in res.output
    res = CliRunner().invoke(main, ["data", "merge", str(a), str(b), "--out", str(tmp_path / "ab")])
    assert res.exit_code != 0 and "--overwrite" in res.output and "Traceback" not in res.output
