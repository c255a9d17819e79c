"""``melody-edge data synth``: a captioned music data set from music21's bundled scores and FluidSynth.

Each clip is an excerpt of a public-domain score (Bach chorales, Renaissance masses and madrigals,
trecento songs, string-quartet movements, Irish/Scottish fiddle tunes, European folk songs) with a
seeded choice of instruments per part, tempo, transposition, loudness and an optional drum part,
rendered by the FluidSynth CLI with a General MIDI SoundFont to 24 kHz mono. Its facts (collection,
key after transposition, tempo, meter, instruments, drums) become a caption and a JSON line in
``index.jsonl``. The train/validation split is by source work, so no work straddles the two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from melody_edge.models.checkpoint import replace_directory

from .midi import DRUM_CHANNEL, Note, write_midi
from .synth_catalog import COLLECTIONS, DRUMS, GM_NAMES, Collection, caption_for, key_name

SOUNDFONT_PATHS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
INSTALL_HINT = "install it with `sudo apt-get install fluidsynth timgm6mb-soundfont` (Debian/Ubuntu)"
VALIDATION_PERCENT = 10


class DataSynthError(RuntimeError):
    """The data set cannot be built; the message names the missing piece and the fix."""


@dataclasses.dataclass(frozen=True)
class Work:
    """A parsed score reduced to what rendering needs."""

    id: str
    collection: str
    title: str
    composer: str
    parts: tuple[tuple[tuple[float, float, int], ...], ...]  # per part: (start_q, dur_q, midi pitch)
    length: float  # quarter notes
    tonic: int  # pitch class 0..11
    mode: str  # "major" / "minor"
    meter: tuple[int, int]


@dataclasses.dataclass
class DatasetSummary:
    out: Path
    clips: int
    seconds: float
    splits: dict[str, int]
    collections: dict[str, int]


def find_soundfont(explicit: Path | None = None) -> Path:
    if explicit is not None:
        if not Path(explicit).is_file():
            raise DataSynthError(f"SoundFont {explicit} not found; pass an existing .sf2 file or {INSTALL_HINT}")
        return Path(explicit)
    for p in SOUNDFONT_PATHS:
        if Path(p).is_file():
            return Path(p)
    raise DataSynthError(f"no General MIDI SoundFont found (looked in {', '.join(SOUNDFONT_PATHS)}); {INSTALL_HINT}")


def find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise DataSynthError(f"the `fluidsynth` program is not on PATH; {INSTALL_HINT}")
    return exe


def fluidsynth_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def _music21():
    try:
        import music21
    except ImportError:
        raise DataSynthError(
            "the music21 package is missing; install the data extra: pip install -e '.[data]'"
        ) from None
    return music21


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def split_of(work_id: str) -> str:
    return "validation" if _stable_int("split", work_id) % 100 < VALIDATION_PERCENT else "train"


def list_sources(collection: Collection) -> list[str]:
    """Corpus paths (as strings, relative to the corpus root where possible) for a collection."""
    m21 = _music21()
    paths = []
    for composer in collection.composers:
        for p in m21.corpus.getComposer(composer):
            p = Path(p)
            if p.suffix in collection.suffixes:
                paths.append(str(p))
    return sorted(paths)


def source_name(source: str) -> str:
    """The part of a work id naming its file: the file name for a file directly under its composer's
    folder (``bach/bwv437.mxl`` -> ``bwv437.mxl``), the corpus-relative path for nested ones, whose names
    repeat (``haydn/opus1no1/movement1.mxl``, ``mozart/k80/movement1.mxl``)."""
    path = Path(source)
    try:
        rel = path.relative_to(_music21().common.getCorpusFilePath())
    except ValueError:  # not in the bundled corpus
        return path.name
    return path.name if len(rel.parts) <= 2 else rel.as_posix()


def parse_source(source: str):
    """All scores in one corpus file (an ABC file may hold hundreds of tunes)."""
    m21 = _music21()
    parsed = m21.corpus.parse(source)
    return list(parsed.scores) if isinstance(parsed, m21.stream.Opus) else [parsed]


def score_to_work(score, source: str, number: int, many: bool, collection: Collection) -> Work | None:
    """A parsed score reduced to notes, key, meter; ``None`` when it is unusable (too short, no notes)."""
    parts = []
    for part in score.parts:
        notes = []
        for n in part.flatten().notes:
            if n.duration.quarterLength > 0:
                notes.extend((float(n.offset), float(n.duration.quarterLength), int(p.midi)) for p in n.pitches)
        if notes:
            parts.append(tuple(sorted(notes)))
    length = float(score.highestTime)
    if not parts or length < 8:
        return None
    try:
        key = score.analyze("key")
    except Exception:  # music21 raises several types on degenerate scores; skip those works
        return None
    ts = score.recurse().getElementsByClass("TimeSignature").first()
    meter = (int(ts.numerator), int(ts.denominator)) if ts is not None else (4, 4)
    meta = score.metadata
    title = (meta.title if meta is not None and meta.title else None) or Path(source).stem
    composer = (meta.composer if meta is not None and meta.composer else None) or collection.default_composer
    name = source_name(source)
    return Work(
        id=f"{collection.name}/{name}#{number}" if many else f"{collection.name}/{name}",
        collection=collection.name,
        title=str(title),
        composer=str(composer),
        parts=tuple(parts[: collection.max_parts]),
        length=length,
        tonic=int(key.tonic.pitchClass),
        mode="minor" if key.mode == "minor" else "major",
        meter=meter,
    )


def _drum_notes(meter: tuple[int, int], quarters: float, velocity: int) -> list[Note]:
    num, den = meter
    beat = 4 / den
    compound = den == 8 and num % 3 == 0
    notes = []
    t, i = 0.0, 0
    while t < quarters:
        pos = i % num
        if pos == 0 or (not compound and num == 4 and pos == 2):
            notes.append(Note(t, beat / 2, DRUMS["kick"], velocity, DRUM_CHANNEL))
        elif (compound and pos == num // 2) or (not compound and pos % 2 == 1) or (num == 3 and pos > 0):
            notes.append(Note(t, beat / 2, DRUMS["snare"], velocity - 10, DRUM_CHANNEL))
        for h in (0.0, beat / 2) if not compound else (0.0,):
            notes.append(Note(t + h, beat / 4, DRUMS["hihat"], velocity - 25, DRUM_CHANNEL))
        t += beat
        i += 1
    return notes


def plan_clip(work: Work, index: int, seed: int, clip_seconds: float) -> dict[str, Any]:
    """Seeded choices for one clip of ``work``: tempo, transposition, instruments, drums, loudness."""
    rng = np.random.default_rng(_stable_int(seed, work.id, index))
    coll = COLLECTIONS[work.collection]
    bpm = int(rng.integers(coll.tempo[0], coll.tempo[1] + 1))
    transpose = int(rng.integers(-5, 7))
    ensemble_name, programs = coll.ensembles[int(rng.integers(len(coll.ensembles)))]
    programs = [programs[min(i, len(programs) - 1)] for i in range(len(work.parts))]
    quarters = clip_seconds * bpm / 60
    bar = work.meter[0] * 4 / work.meter[1]
    bars = max(int((work.length - quarters) // bar), 0)
    start = float(rng.integers(0, bars + 1)) * bar if bars else 0.0
    return {
        "bpm": bpm,
        "transpose": transpose,
        "ensemble": ensemble_name,
        "programs": programs,
        "drums": bool(rng.random() < coll.drum_probability),
        "velocity": int(rng.integers(60, 111)),
        "peak": float(rng.uniform(0.25, 0.9)),
        "start_quarters": start,
        "quarters": quarters,
    }


def clip_notes(work: Work, plan: dict[str, Any]) -> list[Note]:
    """The excerpt's notes (looping the work when it is shorter than the clip)."""
    start, span = plan["start_quarters"], plan["quarters"] + 2
    notes = []
    for ch, part in enumerate(work.parts):
        channel = ch if ch < DRUM_CHANNEL else ch + 1
        for loop in range(math.ceil((start + span) / work.length) + 1):
            base = loop * work.length - start
            for s, d, p in part:
                t = base + s
                if -d < t < span:
                    t0 = max(t, 0.0)
                    notes.append(Note(t0, d - (t0 - t), p + plan["transpose"], plan["velocity"], channel))
    if plan["drums"]:
        notes += _drum_notes(work.meter, span, min(plan["velocity"] + 5, 120))
    return notes


def render(exe: str, soundfont: Path, midi: Path, wav: Path, sample_rate: int) -> None:
    cmd = [exe, "-ni", "-q", "-g", "0.5", "-r", str(sample_rate), "-F", str(wav), str(soundfont), str(midi)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not wav.is_file():
        raise DataSynthError(f"fluidsynth failed on {midi.name}: {proc.stderr.strip()[:300]}")


def synthesize_dataset(
    out_dir: str | Path,
    hours: float = 1.0,
    seed: int = 0,
    soundfont: Path | None = None,
    clip_seconds: float = 10.0,
    sample_rate: int = 24000,
    clips_per_work: int = 4,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetSummary:
    """Build the data set in ``out_dir`` (written to a temporary sibling and renamed when complete)."""
    if not hours > 0:
        raise DataSynthError(f"--hours must be > 0, got {hours}")
    if not clip_seconds > 0:
        raise DataSynthError(f"--clip-seconds must be > 0, got {clip_seconds}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataSynthError(f"{out_dir} exists and is not empty; choose another --out or pass --overwrite")
    exe, sf2, m21 = find_fluidsynth(), find_soundfont(soundfont), _music21()
    total = max(1, round(hours * 3600 / clip_seconds))
    rng = np.random.default_rng(seed)
    sources = {name: list_sources(c) for name, c in COLLECTIONS.items()}
    names = [n for n in COLLECTIONS if sources[n]]
    weights = np.array([COLLECTIONS[n].weight for n in names])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    rows: list[dict[str, Any]] = []
    parsed: dict[str, list] = {}
    works: dict[tuple[str, int], Work | None] = {}
    try:
        (tmp / "audio").mkdir()
        attempts = 0
        while len(rows) < total:
            attempts += 1
            if attempts > total * 5 + 50:
                raise DataSynthError("too many unusable scores; try another --seed")
            coll = COLLECTIONS[names[int(rng.choice(len(names), p=weights / weights.sum()))]]
            source = sources[coll.name][int(rng.integers(len(sources[coll.name])))]
            if source not in parsed:
                parsed[source] = parse_source(source)
            scores = parsed[source]
            number = int(rng.integers(len(scores)))
            if (source, number) not in works:
                works[(source, number)] = score_to_work(scores[number], source, number, len(scores) > 1, coll)
            work = works[(source, number)]
            if work is None:
                continue
            for k in range(min(clips_per_work, total - len(rows))):
                row = _make_clip(work, len(rows), k, seed, exe, sf2, tmp, clip_seconds, sample_rate)
                if row is not None:
                    rows.append(row)
                    if progress:
                        progress(len(rows), total)
        with (tmp / "index.jsonl").open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        summary = {
            "seed": seed,
            "hours_requested": hours,
            "clips": len(rows),
            "seconds": len(rows) * clip_seconds,
            "clip_seconds": clip_seconds,
            "sample_rate": sample_rate,
            "splits": _count(rows, "split"),
            "collections": _count(rows, "collection"),
            "soundfont": sf2.name,
            "soundfont_sha256": hashlib.sha256(sf2.read_bytes()).hexdigest(),
            "fluidsynth": fluidsynth_version(exe),
            "music21": m21.__version__,
        }
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DatasetSummary(out_dir, len(rows), len(rows) * clip_seconds, summary["splits"], summary["collections"])


def _count(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r[key]] = out.get(r[key], 0) + 1
    return dict(sorted(out.items()))


def _make_clip(
    work: Work, n: int, k: int, seed: int, exe: str, sf2: Path, tmp: Path, clip_seconds: float, sample_rate: int
) -> dict[str, Any] | None:
    plan = plan_clip(work, k, seed, clip_seconds)
    clip_id = f"{n:06d}"
    midi, wav = tmp / f"{clip_id}.mid", tmp / f"{clip_id}.render.wav"
    write_midi(midi, clip_notes(work, plan), {i: p for i, p in enumerate(plan["programs"])}, plan["bpm"])
    render(exe, sf2, midi, wav, sample_rate)
    audio, _ = sf.read(str(wav), dtype="float32", always_2d=True)  # fluidsynth renders at -r sample_rate
    midi.unlink()
    wav.unlink()
    audio = audio.mean(axis=1)
    length = round(clip_seconds * sample_rate)
    audio = np.pad(audio[:length], (0, max(0, length - audio.shape[0])))
    peak = float(np.abs(audio).max())
    if peak < 1e-3 or float(np.mean(np.abs(audio[: length // 2]) > 1e-3)) < 0.2:
        return None  # silent or mostly silent excerpt (a rest-heavy passage)
    audio = audio * (plan["peak"] / peak)
    sf.write(str(tmp / "audio" / f"{clip_id}.wav"), audio, sample_rate, subtype="PCM_16")
    tonic = (work.tonic + plan["transpose"]) % 12
    instruments = list(dict.fromkeys(GM_NAMES[p] for p in plan["programs"]))
    facts = {
        "collection": work.collection,
        "style": COLLECTIONS[work.collection].style,
        "composer": work.composer,
        "work": work.id,
        "title": work.title,
        "key": key_name(tonic),
        "tonic_pc": tonic,
        "mode": work.mode,
        "tempo_bpm": plan["bpm"],
        "meter": f"{work.meter[0]}/{work.meter[1]}",
        "ensemble": plan["ensemble"],
        "instruments": instruments,
        "gm_programs": plan["programs"],
        "drums": plan["drums"],
        "transpose": plan["transpose"],
        "offset_quarters": plan["start_quarters"],
        "rms_dbfs": round(float(20 * np.log10(np.sqrt(np.mean(audio**2)) + 1e-9)), 1),
    }
    caption = caption_for(facts, _stable_int(seed, work.id, k, "caption"))
    return {
        "id": clip_id,
        "path": f"audio/{clip_id}.wav",
        "caption": caption,
        "split": split_of(work.id),
        "seconds": clip_seconds,
        "sample_rate": sample_rate,
        **facts,
    }
