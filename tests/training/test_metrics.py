"""The model card's estimators on signals whose answer is known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from melody_edge.training.metrics import (
    dpd_fast_slow_error,
    estimate_key,
    estimate_tempo,
    key_from_tokens,
    tempo_ok,
    token_chroma_table,
)

SR = 24000


def _note_train(bpm: float, seconds: float = 10.0, seed: int = 0) -> torch.Tensor:
    """Plucked notes of random pitch, one per beat, with a louder downbeat every 4 beats."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * SR)) / SR
    audio = torch.zeros_like(t)
    beat = 60.0 / bpm
    for k in range(int(seconds / beat)):
        start = k * beat
        f = 220 * 2 ** (int(torch.randint(0, 12, (1,), generator=gen)) / 12)
        local = (t - start).clamp_min(0)
        env = torch.where(t >= start, torch.exp(-local * 6), torch.zeros_like(t))
        audio += (1.0 if k % 4 == 0 else 0.6) * env * torch.sin(2 * math.pi * f * local)
    return 0.2 * audio


@pytest.mark.parametrize("bpm", [72, 100, 138, 176])
def test_tempo_of_a_note_train(bpm):
    estimate = estimate_tempo(_note_train(bpm, seed=bpm), SR)
    assert abs(estimate / bpm - 1) < 0.04, estimate


def test_tempo_ok_counts_octave_errors_only_in_accuracy2():
    assert tempo_ok(101.0, 100.0) == (True, True)
    assert tempo_ok(200.0, 100.0) == (False, True)
    assert tempo_ok(33.0, 100.0) == (False, True)
    assert tempo_ok(130.0, 100.0) == (False, False)


def _arpeggio(notes: list[int], seconds: float = 8.0) -> torch.Tensor:
    t = torch.arange(round(seconds * SR)) / SR
    midi = torch.tensor(notes)
    step = (t * 3).long() % len(notes)
    freq = 440 * 2 ** ((midi[step] - 69) / 12)
    return 0.3 * torch.sin(2 * math.pi * torch.cumsum(freq, 0) / SR)


A_MINOR, E_FLAT_MAJOR = [57, 60, 64, 69, 64, 60], [51, 55, 58, 63, 58, 55]


def test_key_of_a_minor_triad_arpeggio():
    assert estimate_key(_arpeggio(A_MINOR), SR) == (9, "minor")


def test_token_chroma_lookup_reads_the_key_from_tokens_alone():
    hop = 960
    a, e = _arpeggio(A_MINOR), _arpeggio(E_FLAT_MAJOR)
    n = a.numel() // hop
    # Token 5 always sounds A minor, token 9 E-flat major; token 2 never occurs.
    table = token_chroma_table([a, e], [torch.full((n,), 5), torch.full((n,), 9)], 16, SR, hop)
    assert table.shape == (16, 12) and torch.equal(table[2], torch.zeros(12))
    assert key_from_tokens(torch.full((40,), 5), table) == (9, "minor")
    assert key_from_tokens(torch.tensor([9] * 30 + [2] * 3), table) == (3, "major")


class _VelocityOf:
    """A stand-in DPD whose clean-latent estimate is ``guess(z0)`` exactly, at any angle."""

    def __init__(self, z0: torch.Tensor, guess, chunks: int = 2) -> None:
        self.z0, self.guess = z0, guess
        self.config = SimpleNamespace(chunks=chunks, chunk_frames=z0.shape[-1] // chunks)

    def __call__(self, z, angles, tokens):
        cos, sin = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
        return (cos * z - self.guess(self.z0)) / sin  # x0_hat = cos * z - sin * v = guess(z0)


def test_fast_slow_error_is_zero_for_an_oracle_and_one_for_what_it_misses():
    torch.manual_seed(0)
    t = torch.arange(400.0)
    slow = torch.sin(2 * math.pi * t / 200)[None, None].repeat(1, 2, 1)
    fast = 0.5 * torch.sin(2 * math.pi * t / 2.5)[None, None].repeat(1, 2, 1)  # far faster than 5 frames
    z0 = slow + fast
    tokens = torch.zeros(1, 40, dtype=torch.long)
    oracle = dpd_fast_slow_error(_VelocityOf(z0, lambda z: z), z0, tokens)
    assert all(v["fast"] < 1e-6 and v["slow"] < 1e-6 for v in oracle.values())
    smooth_only = dpd_fast_slow_error(_VelocityOf(z0, lambda z: slow), z0, tokens)
    assert all(v["fast"] == pytest.approx(1.0, abs=0.05) and v["slow"] < 0.05 for v in smooth_only.values())
    nothing = dpd_fast_slow_error(_VelocityOf(z0, torch.zeros_like), z0, tokens)
    assert all(
        v["fast"] == pytest.approx(1.0, abs=0.05) and v["slow"] == pytest.approx(1.0, abs=0.05)
        for v in nothing.values()
    )
