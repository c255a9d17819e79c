"""``melody-edge data merge``: one data set from several, e.g. ``data synth`` runs rendered in parallel.

``data synth`` renders on one core; two runs with different seeds on two cores, merged, give twice
the audio in the same wall time. The merged set keeps every clip's facts and split (the split is by
source work, so it agrees across seeds) and renames clips ``<source number>-<id>`` so ids stay unique.
Audio is hard-linked where the file system allows (no second copy), copied otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from melody_edge.models.checkpoint import replace_directory

from .data import INDEX_FILE, DataError, read_index
from .data_synth import DatasetSummary, _count

SUMMARY_FILE = "dataset.json"
# Facts every source must share: clips of another rate or length cannot train one model.
_SHARED = ("sample_rate", "clip_seconds")


def _summary(src: Path) -> dict[str, Any]:
    path = src / SUMMARY_FILE
    if not path.is_file():
        raise DataError(f"{path} not found; merge data sets written by `melody-edge data synth`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rebuild that data set") from exc


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def merge_datasets(sources: list[Path], out_dir: Path, overwrite: bool = False) -> DatasetSummary:
    """Write ``out_dir`` holding every clip of ``sources`` (at least two data set directories)."""
    sources, out_dir = [Path(s) for s in sources], Path(out_dir)
    if len(sources) < 2:
        raise DataError("merge needs at least two data sets")
    if len({s.resolve() for s in sources}) < len(sources):
        raise DataError("a data set is listed twice; its clips would be trained on twice")
    if out_dir.exists() and not overwrite:
        raise DataError(f"{out_dir} already exists; pass --overwrite to replace it or choose another --out")
    if any(out_dir.resolve() == s.resolve() for s in sources):
        raise DataError(f"--out {out_dir} is one of the sources; choose a new directory")
    summaries = [_summary(s) for s in sources]
    for key in _SHARED:
        values = {s.get(key) for s in summaries}
        if len(values) > 1:
            named = ", ".join(f"{src}: {s.get(key)}" for src, s in zip(sources, summaries, strict=True))
            raise DataError(f"the data sets differ in {key} ({named}); render them with the same settings")
    rows: list[dict[str, Any]] = []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "audio").mkdir()
        for n, src in enumerate(sources):
            clips = read_index(src)  # validates every row, and names the file and line of a bad one
            lines = [ln for ln in (src / INDEX_FILE).read_text().splitlines() if ln.strip()]
            for clip, line in zip(clips, lines, strict=True):
                if not clip.path.is_file():
                    raise DataError(f"{clip.path} (clip {clip.id} of {src}) is missing; rebuild that data set")
                row = json.loads(line)
                row["id"] = f"{n}-{clip.id}"
                row["path"] = f"audio/{row['id']}{clip.path.suffix}"
                row["source"] = str(src)
                _link_or_copy(clip.path, tmp / row["path"])
                rows.append(row)
        with (tmp / INDEX_FILE).open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        summary = {
            "clips": len(rows),
            "seconds": sum(float(s.get("seconds", 0.0)) for s in summaries),
            **{key: summaries[0].get(key) for key in _SHARED},
            "splits": _count(rows, "split"),
            "collections": _count(rows, "collection") if all("collection" in r for r in rows) else {},
            "merged_from": [{"path": str(src), **s} for src, s in zip(sources, summaries, strict=True)],
        }
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DatasetSummary(out_dir, len(rows), summary["seconds"], summary["splits"], summary["collections"])
