"""An auxiliary DPD loss: the pitch classes of what its clean-latent estimate decodes to.

Why: this VAE keeps pitch in latent structure faster than one token (docs/model_card.md), which the
velocity MSE alone cannot teach the DPD to draw: near noise, the MSE-optimal estimate is the mean of
that structure, and the mean decodes to no pitch. Decoding the estimate through the frozen VAE decoder
and comparing the chroma of the result with the real audio's (frame by frame, the audio the latent was
encoded from) tells the DPD which structure carries which pitch class. Training-only: the sampler, the
exported programs and the bundle contract are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import chroma_frames

N_FFT = 4096  # the key estimator's resolution (metrics.estimate_key), so the loss reads what it reads


def chroma_distance(fake: Tensor, real: Tensor, sample_rate: int) -> Tensor:
    """Per example [B]: 1 - the cosine similarity of the two chroma vectors of each frame (of the square-root
    energies, so one loud partial does not decide it), averaged over frames weighted by the real frame's
    chroma energy (a silent frame's pitch class means nothing). 0 when the pitch classes match."""
    if real.shape[-1] < N_FFT:
        raise ValueError(f"chroma needs at least {N_FFT} samples per example, got {real.shape[-1]}")
    cf = chroma_frames(fake, sample_rate, N_FFT).clamp_min(1e-10).sqrt()
    cr = chroma_frames(real, sample_rate, N_FFT).clamp_min(1e-10).sqrt()
    weight = cr.sum(-1)
    weight = weight / weight.sum(-1, keepdim=True).clamp_min(1e-10)
    return (weight * (1.0 - F.cosine_similarity(cf, cr, dim=-1))).sum(-1)


def crop_starts(conditioned: Tensor, chunk_frames: int, crop_frames: int, generator: torch.Generator | None) -> Tensor:
    """One crop per example inside one of its conditioned chunks: [B] start frames, -1 where the example
    has no conditioned chunk (its tokens were dropped). conditioned: [B, M] bool."""
    b, m = conditioned.shape
    crop_frames = min(crop_frames, chunk_frames)
    # A random conditioned chunk: the argmax of random scores where conditioned, -1 elsewhere.
    scores = torch.rand(b, m, generator=generator, device=conditioned.device)
    chunk = torch.where(conditioned, scores, torch.full_like(scores, -1.0)).argmax(-1)
    offset = torch.randint(chunk_frames - crop_frames + 1, (b,), generator=generator, device=conditioned.device)
    starts = chunk * chunk_frames + offset
    return torch.where(conditioned.any(-1), starts, torch.full_like(starts, -1))


def decoded_chroma_loss(
    decode: Callable[[Tensor], Tensor],
    x0: Tensor,
    audio: Tensor,
    starts: Tensor,
    crop_frames: int,
    hop: int,
    sample_rate: int,
) -> Tensor:
    """Mean :func:`chroma_distance` between ``decode`` of each example's crop of the clean-latent estimate
    and the same span of its real audio; 0 (with a gradient path) when no example has a crop.

    x0: [B, C, L] (the DPD's estimate); audio: [B, L * hop] (what the real latent was encoded from);
    starts: [B] crop start frames, -1 to skip (:func:`crop_starts`).
    """
    keep = (starts >= 0).nonzero().flatten().tolist()
    if not keep:
        return x0.sum() * 0.0
    lat = torch.stack([x0[i, :, int(starts[i]) : int(starts[i]) + crop_frames] for i in keep])
    real = torch.stack([audio[i, int(starts[i]) * hop : (int(starts[i]) + crop_frames) * hop] for i in keep])
    return chroma_distance(decode(lat), real, sample_rate).mean()
