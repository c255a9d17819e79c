"""The decoded chroma loss of the DPD (training/chroma_loss.py)."""

from __future__ import annotations

import math

import pytest
import torch

from melody_edge.training.chroma_loss import chroma_distance, crop_starts, decoded_chroma_loss

SR = 24000


def _tone(freq: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(round(seconds * SR)) / SR
    return 0.3 * torch.sin(2 * math.pi * freq * t)


def test_chroma_distance_follows_pitch_class_not_octave():
    a4, a5, c4 = _tone(440.0), _tone(880.0), _tone(261.63)
    same = chroma_distance(a4[None], a4[None], SR)
    octave = chroma_distance(a5[None], a4[None], SR)
    other = chroma_distance(c4[None], a4[None], SR)
    assert float(same) < 1e-5
    assert float(octave) < 0.1  # the same pitch class an octave up
    assert float(other) > 0.5
    # Batched: one value per example.
    both = chroma_distance(torch.stack([a4, c4]), torch.stack([a4, a4]), SR)
    assert both.shape == (2,) and torch.allclose(both, torch.cat([same, other]), atol=1e-6)


def test_chroma_distance_refuses_audio_shorter_than_its_fft():
    with pytest.raises(ValueError, match="at least 4096 samples"):
        chroma_distance(torch.zeros(1, 1000), torch.zeros(1, 1000), SR)


def test_crops_stay_inside_conditioned_chunks():
    conditioned = torch.tensor([[True, False, False, False], [False, False, True, True], [False] * 4])
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        starts = crop_starts(conditioned, chunk_frames=100, crop_frames=40, generator=gen)
        assert 0 <= starts[0] <= 60
        assert 200 <= starts[1] <= 360
        assert starts[2] == -1  # no conditioned chunk: no crop
    # A crop longer than a chunk is cut to the chunk.
    assert int(crop_starts(conditioned[:1], 100, 500, gen)[0]) == 0


def test_decoded_chroma_loss_reaches_the_latent_estimate():
    """The gradient flows from the chroma of the decoded crop back to the DPD's estimate; with no crop the
    loss is 0 and leaves the estimate's gradient at zero."""
    hop = 96
    frames = 2 * SR // hop
    real = torch.stack([_tone(440.0, 2.0), _tone(261.63, 2.0)])
    x0 = torch.randn(2, 4, frames, requires_grad=True)
    weights = torch.randn(4, hop) * 0.1

    def decode(z: torch.Tensor) -> torch.Tensor:  # a linear stand-in for the VAE decoder: [B, 4, F] -> [B, F * hop]
        return torch.einsum("bcf,ch->bfh", z, weights).reshape(z.shape[0], -1)

    starts = torch.tensor([0, -1])
    loss = decoded_chroma_loss(decode, x0, real, starts, frames, hop, SR)
    loss.backward()
    assert 0 < float(loss.detach()) <= 1
    assert x0.grad[0].abs().sum() > 0 and x0.grad[1].abs().sum() == 0  # only the cropped example
    x0.grad = None
    none = decoded_chroma_loss(decode, x0, real, torch.tensor([-1, -1]), frames, hop, SR)
    none.backward()
    assert float(none.detach()) == 0 and float(x0.grad.abs().sum()) == 0
