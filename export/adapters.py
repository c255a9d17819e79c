"""Thin wrappers, one per exported component, with fixed example shapes.

Each adapter only fixes the calling convention of a network from ``melody_edge.models`` (names,
shapes, dtypes of inputs and outputs); backend quirks (module swaps, dtype casts) live in the
backend modules of this package.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..models.diffusion import angle_schedule, ddim_sample
from ..models.dpd import DualPathDiffusion
from ..models.lm import SemanticLM
from ..models.melody import MeLoDy
from ..models.vae import VAE


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32" | "int64"

    def example(self) -> Tensor:
        dtype = {"float32": torch.float32, "int64": torch.int64}[self.dtype]
        return torch.zeros(self.shape, dtype=dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def examples(self) -> tuple[Tensor, ...]:
        return tuple(t.example() for t in self.inputs)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


class LMPrefill(nn.Module):
    """ids [1, P] int64 at start_pos [1] int64 -> logits [1, P, V]; writes the KV cache."""

    def __init__(self, lm: SemanticLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: Tensor, start_pos: Tensor) -> Tensor:
        return self.lm.prefill(ids, start_pos)


class LMDecode(nn.Module):
    """token [1, 1] int64 at pos [1] int64 -> logits [1, V]; writes the KV cache."""

    def __init__(self, lm: SemanticLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, token: Tensor, pos: Tensor) -> Tensor:
        return self.lm.decode(token, pos)


class DPDWindow(nn.Module):
    """One guided network call: z [2, C, W], angles [2, W], tokens [2, S] -> v [2, C, W]."""

    def __init__(self, dpd: DualPathDiffusion) -> None:
        super().__init__()
        self.dpd = dpd

    def forward(self, z: Tensor, angles: Tensor, tokens: Tensor) -> Tensor:
        return self.dpd(z, angles, tokens)


class DPDSampler(nn.Module):
    """The whole T-step guided angle-DDIM sampler unrolled into one graph.

    z [1, C, W] (noise on target frames), angles [1, W], target [1, W] float (1 = denoise),
    tokens [1, S], guidance [1] -> z [1, C, W]. The schedule is fixed at export time (``steps``).
    """

    def __init__(self, dpd: DualPathDiffusion, steps: int) -> None:
        super().__init__()
        self.dpd = dpd
        self.schedule = angle_schedule(steps)
        self.null_token = dpd.config.null_token

    def forward(self, z: Tensor, angles: Tensor, target: Tensor, tokens: Tensor, guidance: Tensor) -> Tensor:
        # The same sampler the runtime runs step by step; the guidance scale stays a graph input.
        steps = len(self.schedule)
        return ddim_sample(self.dpd, z, angles, target, tokens, steps, guidance, self.null_token, self.schedule)


class VAEDecodeChunk(nn.Module):
    """z [1, C, R + chunk + R] normalised latents -> audio [1, chunk * hop]."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: Tensor) -> Tensor:
        return self.vae.decode_chunk(z)


class VAEEncode(nn.Module):
    """audio [1, N] -> DPD-space latent mean gain * clip(mu / scale, -1, 1) [1, C, N / hop] (for continuing audio)."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, audio: Tensor) -> Tensor:
        return self.vae.latent(audio, sample=False)


def method_specs(model: MeLoDy, prefill_len: int, steps: int, encoder_seconds: float = 2.5) -> dict[str, dict]:
    """Names, shapes and dtypes of every exported method, per component (the bundle contract)."""
    c = model.config
    d = c.dpd
    v = c.lm.vocab_size
    r = model.vae.context_frames
    w, s, ch = d.window_frames, d.window_tokens, d.latent_channels
    f32, i64 = "float32", "int64"
    enc_samples = round(encoder_seconds * c.sample_rate / c.hop_length) * c.hop_length
    return {
        "lm": {
            "prefill": MethodSpec(
                "prefill",
                (TensorSpec("ids", (1, prefill_len), i64), TensorSpec("start_pos", (1,), i64)),
                (TensorSpec("logits", (1, prefill_len, v), f32),),
            ),
            "decode": MethodSpec(
                "decode",
                (TensorSpec("token", (1, 1), i64), TensorSpec("pos", (1,), i64)),
                (TensorSpec("logits", (1, v), f32),),
            ),
        },
        "dpd": {
            "forward": MethodSpec(
                "forward",
                (
                    TensorSpec("z", (2, ch, w), f32),
                    TensorSpec("angles", (2, w), f32),
                    TensorSpec("tokens", (2, s), i64),
                ),
                (TensorSpec("v", (2, ch, w), f32),),
            )
        },
        "dpd_sampler": {
            "forward": MethodSpec(
                "forward",
                (
                    TensorSpec("z", (1, ch, w), f32),
                    TensorSpec("angles", (1, w), f32),
                    TensorSpec("target", (1, w), f32),
                    TensorSpec("tokens", (1, s), i64),
                    TensorSpec("guidance", (1,), f32),
                ),
                (TensorSpec("z_out", (1, ch, w), f32),),
            )
        },
        "vae_decoder": {
            "forward": MethodSpec(
                "forward",
                (TensorSpec("z", (1, ch, d.chunk_frames + 2 * r), f32),),
                (TensorSpec("audio", (1, d.chunk_frames * c.hop_length), f32),),
            )
        },
        "vae_encoder": {
            "forward": MethodSpec(
                "forward",
                (TensorSpec("audio", (1, enc_samples), f32),),
                (TensorSpec("latent", (1, ch, enc_samples // c.hop_length), f32),),
            )
        },
    }
