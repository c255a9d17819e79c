"""Record every component call of a streamed generation, for the apps' conformance replay.

The demo apps' platform-free cores (``android_demo/core``, ``ios_demo/Core``) replay a trace: a runner
serves the recorded outputs and fails as soon as the core builds an input that differs from the
recorded one. That proves an app drives the models exactly as this runtime does.

File format (little endian), chosen so a Kotlin or Swift reader is a page of code::

    magic  b"MELTRACE"  u32 version (1)
    u32 header length, header JSON (settings, prefix codes, stream spec)
    records until EOF:
        u8 event-name length, event name (ascii)
        u8 array count, then per array:
            u8 name length, name (ascii), u8 dtype (1 = float32, 2 = int64), u8 ndim, u32 dims..., raw data

Events: ``noise`` (values), ``lm_prefill`` (ids, start_pos, logits), ``lm_decode`` (token, pos,
logits), ``dpd`` (z, angles, tokens, v: the guidance batch of 2), ``vae_decode`` (z, audio).
Scalars are stored as 0-d int64 arrays.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .backend import Backend, StreamSpec
from .pipeline import GenerationSettings, StreamingGenerator

MAGIC = b"MELTRACE"
VERSION = 1
_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.int64): 2}
_NUMPY = {1: np.float32, 2: np.int64}


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    return arr.astype(np.float32)


class TraceWriter:
    """A ``recorder`` for :class:`StreamingGenerator` that appends records to a binary file."""

    def __init__(self, fh: BinaryIO, header: dict[str, Any]) -> None:
        self.fh = fh
        head = json.dumps(header, sort_keys=True).encode()
        fh.write(MAGIC + struct.pack("<I", VERSION) + struct.pack("<I", len(head)) + head)
        self.counts: dict[str, int] = {}

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        name = event.encode("ascii")
        self.fh.write(struct.pack("<B", len(name)) + name + struct.pack("<B", len(payload)))
        for key, value in payload.items():
            arr = np.ascontiguousarray(_as_array(value))
            k = key.encode("ascii")
            self.fh.write(struct.pack("<B", len(k)) + k + struct.pack("<BB", _DTYPES[arr.dtype], arr.ndim))
            self.fh.write(struct.pack(f"<{arr.ndim}I", *arr.shape) + arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        self.counts[event] = self.counts.get(event, 0) + 1


def read_trace(path: str | Path) -> tuple[dict[str, Any], list[tuple[str, dict[str, np.ndarray]]]]:
    """(header, [(event, {name: array})]) — the Python reader the apps' readers mirror."""
    raw = Path(path).read_bytes()
    if raw[:8] != MAGIC:
        raise ValueError(f"{path}: not a melody-edge trace (bad magic)")
    (version,) = struct.unpack_from("<I", raw, 8)
    if version != VERSION:
        raise ValueError(f"{path}: trace version {version}, this reader knows {VERSION}")
    (n,) = struct.unpack_from("<I", raw, 12)
    header = json.loads(raw[16 : 16 + n])
    off, records = 16 + n, []
    while off < len(raw):
        ln = raw[off]
        event = raw[off + 1 : off + 1 + ln].decode()
        off += 1 + ln
        count = raw[off]
        off += 1
        arrays = {}
        for _ in range(count):
            ln = raw[off]
            key = raw[off + 1 : off + 1 + ln].decode()
            off += 1 + ln
            dtype, ndim = raw[off], raw[off + 1]
            off += 2
            shape = struct.unpack_from(f"<{ndim}I", raw, off)
            off += 4 * ndim
            size = int(np.prod(shape)) if ndim else 1
            arr = np.frombuffer(raw, dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<"), count=size, offset=off)
            off += arr.nbytes
            arrays[key] = arr.reshape(shape)
        records.append((event, arrays))
    return header, records


def record_trace(
    backend: Backend,
    spec: StreamSpec,
    prefix_codes: list[int],
    settings: GenerationSettings,
    out: str | Path,
    use_sampler_artifact: bool = False,
) -> dict[str, Any]:
    """Stream ``settings.seconds`` through ``backend`` and write the trace.

    Step by step (T ``dpd`` calls per chunk) unless ``use_sampler_artifact``: then a bundle whose manifest
    prefers its unrolled sampler records one ``dpd_sampler`` call per chunk instead, as an app following
    ``sampler.preferred`` must make. Returns the header plus the event counts; the audio is in the
    ``vae_decode`` records.
    """
    header = {
        "spec": dataclasses.asdict(spec),
        "settings": dataclasses.asdict(settings),
        "prefix_codes": [int(x) for x in prefix_codes],
        "sampler_artifact": bool(use_sampler_artifact),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        writer = TraceWriter(fh, header)
        gen = StreamingGenerator(backend, spec, recorder=writer, use_sampler_artifact=use_sampler_artifact)
        audio = np.concatenate([c.audio for c in gen.stream(prefix_codes, settings)])
    return {**header, "events": writer.counts, "samples": int(audio.shape[0])}
