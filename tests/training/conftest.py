"""A toy data set in the ``data synth`` format, made of tones (no FluidSynth needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 24000


def make_toy_dataset(root: Path, clips: int = 6, seconds: float = 10.0) -> Path:
    """Arpeggios in different keys: every 3rd clip is validation."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    t = np.arange(round(seconds * SR)) / SR
    names = ["C", "D", "E", "F", "G", "A"]
    with (root / "index.jsonl").open("w") as fh:
        for i in range(clips):
            tonic = 60 + [0, 2, 4, 5, 7, 9][i % 6]
            notes = [tonic, tonic + 4, tonic + 7, tonic + 12]
            step = (np.floor(t * 4).astype(int)) % len(notes)
            freq = 440 * 2 ** ((np.array(notes)[step] - 69) / 12)
            phase = 2 * math.pi * np.cumsum(freq) / SR
            audio = 0.3 * np.sin(phase) * (0.6 + 0.4 * np.cos(2 * math.pi * 4 * t) ** 2)
            sf.write(str(root / "audio" / f"{i:03d}.wav"), audio.astype(np.float32), SR, subtype="PCM_16")
            row = {
                "id": f"{i:03d}",
                "path": f"audio/{i:03d}.wav",
                "caption": f"an arpeggio in {names[i % 6]} major at {100 + 10 * i} bpm on a sine organ",
                "split": "validation" if i % 3 == 2 else "train",
                "key": names[i % 6],
                "mode": "major",
                "tonic_pc": tonic % 12,
                "tempo_bpm": 120,  # four notes a second: eighths at 120 bpm
            }
            fh.write(json.dumps(row) + "\n")
    return root


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy-data"))
