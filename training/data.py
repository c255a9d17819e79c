"""Reading a data set built by ``melody-edge data synth`` (or any directory in the same format).

``DIR/index.jsonl`` holds one JSON object per clip with at least ``id``, ``path`` (relative to DIR),
``caption`` and ``split`` (``train`` or ``validation``); other keys are the clip's facts (key, tempo,
...). Audio is mono WAV at the model's sample rate.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

INDEX_FILE = "index.jsonl"
TRAIN, VALIDATION = "train", "validation"
_SPLIT_ALIASES = {"train": TRAIN, "validation": VALIDATION, "valid": VALIDATION, "val": VALIDATION}


class DataError(ValueError):
    """The data set cannot be used; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Clip:
    id: str
    path: Path
    caption: str
    split: str
    facts: dict[str, Any]


def read_index(data_dir: str | Path) -> list[Clip]:
    """Parse ``index.jsonl``; every problem names the line and the field."""
    data_dir = Path(data_dir)
    index = data_dir / INDEX_FILE
    if not index.is_file():
        raise DataError(
            f"{index} not found; build a data set with `melody-edge data synth --out {data_dir}` "
            "or point --data at a directory holding index.jsonl"
        )
    clips = []
    for n, line in enumerate(index.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{index}:{n}: not valid JSON ({exc}); the index is corrupt, rebuild it") from exc
        for key in ("id", "path", "caption", "split"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise DataError(f"{index}:{n}: field {key!r} is missing or not a non-empty string")
        split = _SPLIT_ALIASES.get(row["split"])
        if split is None:
            raise DataError(f"{index}:{n}: split {row['split']!r} is neither 'train' nor 'validation'")
        facts = {k: v for k, v in row.items() if k not in ("id", "path", "caption", "split")}
        clips.append(Clip(row["id"], data_dir / row["path"], row["caption"], split, facts))
    if not clips:
        raise DataError(f"{index} lists no clips; rebuild the data set")
    return clips


def split_clips(clips: list[Clip], split: str) -> list[Clip]:
    out = [c for c in clips if c.split == split]
    if not out:
        raise DataError(f"the data set has no {split!r} clips; training needs both splits (rebuild with more --hours)")
    return out


def load_clip(clip: Clip, sample_rate: int) -> Tensor:
    """Mono float32 ``[N]`` at ``sample_rate``."""
    if not clip.path.is_file():
        raise DataError(f"{clip.path}: audio file listed in the index is missing; rebuild the data set")
    try:
        audio, rate = sf.read(str(clip.path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"{clip.path}: unreadable audio ({exc}); the file is corrupt, rebuild the data set") from exc
    if rate != sample_rate:
        raise DataError(
            f"{clip.path}: sample rate {rate} Hz but the model runs at {sample_rate} Hz; "
            f"resample the data set to {sample_rate} Hz"
        )
    audio = audio.mean(axis=1)
    if not np.isfinite(audio).all():
        raise DataError(f"{clip.path}: audio holds NaN/Inf samples; rebuild the data set")
    return torch.from_numpy(np.ascontiguousarray(audio))


class AudioSet:
    """The clips of one split, loaded into memory once (an hour of 24 kHz mono is ~350 MB)."""

    def __init__(self, clips: list[Clip], sample_rate: int, min_samples: int = 1) -> None:
        self.clips = clips
        self.sample_rate = sample_rate
        self.audio = [load_clip(c, sample_rate) for c in clips]
        short = [c.id for c, a in zip(clips, self.audio, strict=True) if a.numel() < min_samples]
        if short:
            raise DataError(
                f"{len(short)} clip(s) are shorter than {min_samples} samples ({min_samples / sample_rate:.2f} s), "
                f"e.g. {short[0]}; rebuild the data set with longer --clip-seconds"
            )

    def __len__(self) -> int:
        return len(self.clips)

    def random_crops(self, n: int, length: int, gen: torch.Generator, multiple: int = 1) -> Tensor:
        """``n`` random crops of ``length`` samples, starting at multiples of ``multiple`` -> ``[n, length]``."""
        out = torch.empty(n, length)
        for i in range(n):
            a = self.audio[int(torch.randint(len(self.audio), (1,), generator=gen))]
            slots = (a.numel() - length) // multiple + 1
            start = int(torch.randint(max(slots, 1), (1,), generator=gen)) * multiple
            piece = a[start : start + length]
            out[i] = torch.nn.functional.pad(piece, (0, length - piece.numel()))
        return out

    def fixed_crops(self, n: int, length: int, seed: int = 1234, multiple: int = 1) -> Tensor:
        """A validation batch that is the same on every call."""
        return self.random_crops(n, length, torch.Generator().manual_seed(seed), multiple)


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The RNG of one training step: a function of (seed, rank, step) alone, so a resumed run draws the
    same batches and noise as an uninterrupted one without saving any RNG state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1))
