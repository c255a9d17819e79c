"""The model card's estimators on signals whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from melody_edge.training.metrics import estimate_key, estimate_tempo, key_from_tokens, tempo_ok, token_chroma_table

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
