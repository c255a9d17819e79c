"""What the synthesizer draws from: corpus collections, their ensembles and tempi, and caption wording."""

from __future__ import annotations

import dataclasses
from typing import Any

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
DRUMS = {"kick": 36, "snare": 38, "hihat": 42}

GM_NAMES = {
    0: "piano",
    6: "harpsichord",
    11: "vibraphone",
    19: "church organ",
    21: "accordion",
    22: "harmonica",
    24: "nylon guitar",
    25: "steel guitar",
    32: "acoustic bass",
    40: "violin",
    41: "viola",
    42: "cello",
    43: "double bass",
    46: "harp",
    48: "string ensemble",
    52: "choir",
    56: "trumpet",
    57: "trombone",
    58: "tuba",
    60: "french horn",
    68: "oboe",
    70: "bassoon",
    71: "clarinet",
    73: "flute",
    74: "recorder",
    75: "pan flute",
    105: "banjo",
}


def key_name(tonic_pc: int) -> str:
    return PITCH_NAMES[tonic_pc % 12]


@dataclasses.dataclass(frozen=True)
class Collection:
    name: str
    style: str  # caption noun: "chorale", "fiddle tune", ...
    composers: tuple[str, ...]  # music21 corpus composer/collection names
    suffixes: tuple[str, ...]
    weight: float
    tempo: tuple[int, int]  # quarter-note bpm range
    ensembles: tuple[tuple[str, tuple[int, ...]], ...]  # (name, GM program per part, top part first)
    drum_probability: float
    max_parts: int = 5
    default_composer: str = ""


_VOICES = (
    ("choir", (52, 52, 52, 52, 52)),
    ("organ", (19, 19, 19, 19, 19)),
    ("strings", (40, 40, 41, 42, 43)),
    ("brass", (56, 60, 57, 58, 58)),
    ("woodwinds", (73, 68, 71, 70, 70)),
    ("recorders", (74, 74, 74, 74, 74)),
    ("piano", (0, 0, 0, 0, 0)),
)
_MELODY = (
    ("fiddle", (40,)),
    ("flute", (73,)),
    ("accordion", (21,)),
    ("banjo", (105,)),
    ("harmonica", (22,)),
    ("pan flute", (75,)),
    ("piano", (0,)),
    ("nylon guitar", (24,)),
    ("clarinet", (71,)),
    ("harp", (46,)),
)

COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection(
            "bach-chorales",
            "baroque chorale",
            ("bach",),
            (".mxl", ".xml", ".krn"),
            0.28,
            (56, 110),
            _VOICES,
            0.1,
            default_composer="J. S. Bach",
        ),
        Collection(
            "fiddle-tunes",
            "fiddle tune",
            ("ryansMammoth", "oneills1850"),
            (".abc",),
            0.24,
            (90, 160),
            _MELODY,
            0.45,
        ),
        Collection("folk-songs", "folk song", ("essenFolksong",), (".abc",), 0.14, (70, 130), _MELODY, 0.3),
        Collection(
            "renaissance",
            "renaissance motet",
            ("palestrina", "josquin"),
            (".krn", ".mxl", ".xml"),
            0.16,
            (60, 100),
            _VOICES,
            0.05,
            default_composer="Palestrina",
        ),
        Collection("trecento", "medieval song", ("trecento",), (".xml", ".mxl"), 0.06, (70, 120), _VOICES, 0.1),
        Collection(
            "string-quartets",
            "classical string quartet",
            ("haydn", "mozart", "beethoven"),
            (".mxl", ".xml"),
            0.12,
            (70, 140),
            (
                ("string quartet", (40, 40, 41, 42)),
                ("woodwind quartet", (73, 68, 71, 70)),
                ("piano", (0, 0, 0, 0)),
                ("brass quartet", (56, 60, 57, 58)),
            ),
            0.05,
            max_parts=4,
        ),
    )
}


def _tempo_word(bpm: int) -> str:
    return "slow" if bpm < 80 else ("fast" if bpm >= 125 else "moderate")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption_for(facts: dict[str, Any], variant: int) -> str:
    """A caption from the clip's facts; ``variant`` picks one of a few phrasings deterministically."""
    key = f"{facts['key']} {facts['mode']}"
    inst = _join(list(facts["instruments"]))
    bpm, meter, style = facts["tempo_bpm"], facts["meter"], facts["style"]
    drums = " with drums" if facts["drums"] else ""
    article = "an" if style[0] in "aeiou" else "a"
    templates = (
        f"{article} {style} in {key}, {meter} at {bpm} bpm, played by {inst}{drums}",
        f"{inst} playing {article} {_tempo_word(bpm)} {style} in {key}, {bpm} bpm{drums}",
        f"{_tempo_word(bpm)} {style} in {key} for {inst}{drums}, {meter} time, {bpm} bpm",
        f"{key} {style}, {bpm} bpm in {meter}, {inst}{drums}",
    )
    return templates[variant % len(templates)]


CAPTION_VARIANTS = 8


def caption_variants(facts: dict[str, Any]) -> list[str]:
    """Every phrasing of a clip's facts, full and partial: ``CAPTION_VARIANTS`` strings.

    The conditioner's residual quantizer is fit on these and the LM sees a random one per step, so
    neither memorises one sentence per clip (the data set has fewer captions than RVQ codes).
    """
    key = f"{facts['key']} {facts['mode']}"
    inst = _join(list(facts["instruments"]))
    full = [caption_for(facts, v) for v in range(4)]
    partial = [
        f"music in {key}",
        f"{facts['style']} in {key}",
        f"{inst} in {key}, {facts['tempo_bpm']} bpm",
        f"{_tempo_word(facts['tempo_bpm'])} {facts['style']} for {inst}",
    ]
    return full + partial
