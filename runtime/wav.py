"""A WAV writer that stays valid at every chunk boundary (so Ctrl-C never leaves a broken file)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf


class StreamingWavWriter:
    """Appends float32 mono chunks as 16-bit PCM; the header is rewritten after every chunk."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.samples = 0
        self._file = sf.SoundFile(str(self.path), mode="w", samplerate=sample_rate, channels=1, subtype="PCM_16")

    def write(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(audio)):
            raise FloatingPointError("generated audio contains NaN/Inf; refusing to write it")
        self._file.write(np.clip(audio, -1.0, 1.0))
        self._file.flush()  # sf_write_sync: the header now counts every frame written so far
        self.samples += audio.size

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> StreamingWavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until the block is done, then raise it.

    Writing a chunk and recording it in the report is one step: an interrupt between the two would leave
    a WAV with a chunk its report does not list. Off the main thread (where no SIGINT handler can be set)
    this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
