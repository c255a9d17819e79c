"""The PyTorch eager backend: the reference every exported backend is compared with."""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.melody import MeLoDy
from .backend import Backend, StreamSpec


def stream_spec(model: MeLoDy) -> StreamSpec:
    c = model.config
    return StreamSpec(
        sample_rate=c.sample_rate,
        hop_length=c.hop_length,
        latent_channels=c.dpd.latent_channels,
        chunk_frames=c.dpd.chunk_frames,
        chunks=c.dpd.chunks,
        frames_per_token=c.dpd.frames_per_token,
        prefix_levels=c.lm.prefix_levels,
        prefix_codebook_size=c.lm.prefix_codebook_size,
        vocab_size=c.lm.vocab_size,
        vae_context_frames=model.vae.context_frames,
        lm_max_seq_len=c.lm.max_seq_len,
    )


class EagerBackend(Backend):
    name = "eager"

    def __init__(self, model: MeLoDy, lm_guidance: float | None = None) -> None:
        """``lm_guidance``: classifier-free guidance on the LM (None: the checkpoint's ``lm_guidance_scale``)."""
        self.model = model.eval()
        self.spec = stream_spec(model)
        self.lm = model.streaming_lm(lm_guidance)
        self.lm_guidance = model.config.lm_guidance_scale if lm_guidance is None else float(lm_guidance)

    def lm_reset(self) -> None:
        self.lm.reset_cache()

    @torch.no_grad()
    def lm_prefill(self, ids: Tensor, start_pos: int) -> Tensor:
        return self.lm.prefill(ids.reshape(1, -1).long(), start_pos)[0, -1].float()

    @torch.no_grad()
    def lm_decode(self, token: int, pos: int) -> Tensor:
        return self.lm.decode(torch.tensor([[token]], dtype=torch.long), pos)[0].float()

    @torch.no_grad()
    def dpd(self, z: Tensor, angles: Tensor, tokens: Tensor) -> Tensor:
        return self.model.dpd(z, angles, tokens)

    @torch.no_grad()
    def vae_decode(self, z: Tensor) -> Tensor:
        return self.model.vae.decode_chunk(z)[0]

    @torch.no_grad()
    def vae_encode(self, audio: Tensor) -> Tensor:
        return self.model.vae.latent(audio, sample=False)
