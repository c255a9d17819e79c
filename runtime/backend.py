"""The one interface every runtime backend implements, and the static facts the pipeline needs.

A backend only knows how to load the components and run them; the streaming schedule lives once,
in :mod:`melody_edge.runtime.pipeline`.
"""

from __future__ import annotations

import abc
import dataclasses

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """Static sizes shared by the model, an exported bundle and the apps."""

    sample_rate: int
    hop_length: int
    latent_channels: int
    chunk_frames: int
    chunks: int
    frames_per_token: int
    prefix_levels: int
    prefix_codebook_size: int
    vocab_size: int
    vae_context_frames: int
    lm_max_seq_len: int

    def __post_init__(self) -> None:
        if self.vae_context_frames > self.chunk_frames:
            raise ValueError(
                f"VAE context ({self.vae_context_frames} frames) exceeds a chunk ({self.chunk_frames}); "
                "streaming needs chunks at least as long as the decoder's receptive field"
            )

    @property
    def window_frames(self) -> int:
        return self.chunk_frames * self.chunks

    @property
    def window_tokens(self) -> int:
        return self.window_frames // self.frames_per_token

    @property
    def null_token(self) -> int:
        return self.vocab_size

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def chunk_samples(self) -> int:
        return self.chunk_frames * self.hop_length

    @property
    def vae_window_frames(self) -> int:
        return self.chunk_frames + 2 * self.vae_context_frames

    def chunk_token_range(self, chunk: int) -> tuple[int, int]:
        """Global token indices [start, end) that belong to global chunk ``chunk``.

        With 625-frame chunks and 10 frames per token the counts alternate 62, 63, 62, 63; a window
        of M chunks always holds exactly ``window_tokens``.
        """
        fpt = self.frames_per_token
        return (chunk * self.chunk_frames) // fpt, ((chunk + 1) * self.chunk_frames) // fpt


class Backend(abc.ABC):
    """Runs the exported (or eager) components. Tensors are CPU torch tensors."""

    name: str = "backend"

    @abc.abstractmethod
    def lm_reset(self) -> None:
        """Clear the KV cache."""

    @abc.abstractmethod
    def lm_prefill(self, ids: Tensor, start_pos: int) -> Tensor:
        """ids: [T] int64 written at positions start_pos.. -> logits of the last position [V] float32."""

    @abc.abstractmethod
    def lm_decode(self, token: int, pos: int) -> Tensor:
        """One token at ``pos`` -> logits [V] float32."""

    @abc.abstractmethod
    def dpd(self, z: Tensor, angles: Tensor, tokens: Tensor) -> Tensor:
        """z: [2, C, W]; angles: [2, W]; tokens: [2, S] (conditional, unconditional) -> v [2, C, W]."""

    @abc.abstractmethod
    def vae_decode(self, z: Tensor) -> Tensor:
        """z: [1, C, R + chunk + R] normalised latents -> audio of the middle chunk [chunk * hop]."""

    @abc.abstractmethod
    def vae_encode(self, audio: Tensor) -> Tensor:
        """audio [1, N] -> DPD-space latent [1, C, N / hop] (posterior mean); bundles need the encoder artifact."""

    def sample_window(
        self, z: Tensor, angles: Tensor, target: Tensor, tokens: Tensor, guidance_scale: float, steps: int
    ) -> Tensor | None:
        """The whole T-step sampler in one call when the backend has it for ``steps``, else None.

        z [1, C, W]; angles [1, W]; target [1, W] bool; tokens [1, S] -> z [1, C, W]. Bundles exported
        with the unrolled sampler artifact implement it; the pipeline falls back to T ``dpd`` calls.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class BundleBackend(Backend):
    """A backend that runs an exported bundle (``self.manifest``), with its optional unrolled sampler."""

    manifest: dict

    @abc.abstractmethod
    def dpd_sampler(self, z: Tensor, angles: Tensor, target: Tensor, tokens: Tensor, guidance: Tensor) -> Tensor:
        """The unrolled T-step sampler artifact: target [1, W] float, guidance [1]."""

    def sample_window(
        self, z: Tensor, angles: Tensor, target: Tensor, tokens: Tensor, guidance_scale: float, steps: int
    ) -> Tensor | None:
        sampler = self.manifest["sampler"]
        if "dpd_sampler" not in self.manifest["components"] or steps != sampler["steps"]:
            return None
        if sampler.get("preferred") == "stepwise":  # the export measured T network calls as faster here
            return None
        return self.dpd_sampler(z, angles, target.float(), tokens, torch.tensor([float(guidance_scale)]))


def prefill_in_pieces(run_piece, decode, ids: Tensor, start_pos: int, piece: int, max_seq_len: int) -> Tensor:
    """Prefill any number of ids through a program whose prefill has a static length ``piece``.

    ``run_piece(ids [piece], start) -> logits [piece, V]``; ``decode(token, pos) -> logits [V]``.
    Full pieces run back to back; a last partial piece is right-aligned onto ids already written
    (rewriting a slot with the same token at the same position is exact). Fewer ids than one piece
    are padded at the end: the padded slots lie after the last real position, where the mask hides
    them until decode overwrites them. Where padding would run past the cache, ids go one by one
    through ``decode`` (exact, slower).
    """
    n = int(ids.numel())
    if n == 0:
        raise ValueError("prefill needs at least one id")
    if n >= piece:
        starts = list(range(0, n - piece + 1, piece))
        if starts[-1] + piece < n:
            starts.append(n - piece)
        for s in starts:
            logits = run_piece(ids[s : s + piece], start_pos + s)
        return logits[-1]
    if start_pos + piece <= max_seq_len:
        padded = torch.cat([ids, torch.zeros(piece - n, dtype=ids.dtype)])
        return run_piece(padded, start_pos)[n - 1]
    for i in range(n):
        out = decode(int(ids[i]), start_pos + i)
    return out
