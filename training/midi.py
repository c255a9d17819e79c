"""A minimal Standard MIDI File writer (format 0): enough for rendering score excerpts with FluidSynth.

Writing the file ourselves (instead of through music21) lets the synthesizer choose the tempo,
transposition, programs and a drum part per clip without re-building a music21 score each time.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

TICKS_PER_QUARTER = 480
DRUM_CHANNEL = 9


@dataclasses.dataclass(frozen=True)
class Note:
    start: float  # quarter notes from the excerpt's start
    duration: float  # quarter notes
    pitch: int  # MIDI note number
    velocity: int
    channel: int


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, notes: list[Note], programs: dict[int, int], bpm: float) -> None:
    """Write ``notes`` as one track: tempo ``bpm`` (quarter notes), ``programs[channel]`` per channel."""
    events: list[tuple[int, int, bytes]] = []  # (tick, order, bytes): note-offs before note-ons at a tick
    tempo = round(60_000_000 / bpm)
    events.append((0, 0, b"\xff\x51\x03" + tempo.to_bytes(3, "big")))
    for channel, program in sorted(programs.items()):
        if channel != DRUM_CHANNEL:
            events.append((0, 1, bytes([0xC0 | channel, program & 0x7F])))
    for n in notes:
        if not 0 <= n.pitch <= 127:
            continue
        on = round(n.start * TICKS_PER_QUARTER)
        off = max(on + 1, round((n.start + n.duration) * TICKS_PER_QUARTER))
        vel = max(1, min(127, n.velocity))
        events.append((on, 3, bytes([0x90 | n.channel, n.pitch, vel])))
        events.append((off, 2, bytes([0x80 | n.channel, n.pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray()
    last = 0
    for tick, _, data in events:
        track += _varlen(tick - last) + data
        last = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    path.write_bytes(header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))
