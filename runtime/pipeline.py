"""The streaming pipeline, written once against :class:`~melody_edge.runtime.backend.Backend`.

Schedule (docs/streaming.md has the worked example):

* First window, filled progressively for a short time to first audio: for chunk j = 0..M-1 the LM
  generates only chunk j's tokens, then the sampler denoises chunk j while earlier chunks stay at
  angle 0 and later chunks stay pure noise (angle pi/2, null tokens).
* Continuation, forever: drop the first chunk, re-prefill the LM with the kept tokens (the prefix
  stays in the cache), generate the new chunk's tokens, denoise only the new chunk.
* Audio: after chunk g is final the VAE decodes latent frames [gC - R, (g+1)C - R), R being the
  decoder's context, so the right context is always final; a last flush emits the remaining R frames.
  Concatenated, the chunks equal the offline decode of all latents.

State is explicit and bounded: the window latents, angles and tokens, R * 2 frames of latent history,
and the LM's KV cache inside the backend. Memory does not grow with duration.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from ..models.diffusion import angle_schedule, ddim_sample
from .backend import Backend, StreamSpec
from .rng import STREAM_NOISE, STREAM_TOKENS, PortableRng
from .sampling import sample_token

HALF_PI = math.pi / 2


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    seconds: float
    steps: int = 8
    guidance_scale: float = 2.5
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    # Sampler steps of the first chunk only (0: ``steps``). Fewer steps there shorten the time to first
    # audio, which waits for the whole first denoise, at the cost of a coarser first chunk (docs/streaming.md).
    first_steps: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"seconds must be a positive number, got {self.seconds}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.first_steps < 0:
            raise ValueError(f"first_steps must be >= 1, or 0 for the same as steps, got {self.first_steps}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {self.guidance_scale}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclasses.dataclass
class AudioChunk:
    """One emitted piece of audio and what it cost."""

    index: int
    audio: np.ndarray  # float32 [n], mono, in [-1, 1]
    start_sample: int
    tokens: list[int]  # semantic tokens generated for this chunk (empty for the final flush)
    latents: np.ndarray  # final latents of this chunk [C_lat, chunk_frames] (empty for the flush)
    lm_seconds: float
    dpd_seconds: float
    vae_seconds: float

    @property
    def compute_seconds(self) -> float:
        return self.lm_seconds + self.dpd_seconds + self.vae_seconds


# Called with (event, payload) for every backend call; used to record traces for the apps' tests.
Recorder = Callable[[str, dict], None]


class StreamingGenerator:
    """Yields :class:`AudioChunk` objects as soon as each is decoded."""

    def __init__(
        self, backend: Backend, spec: StreamSpec, recorder: Recorder | None = None, use_sampler_artifact: bool = True
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.recorder = recorder
        # A bundle's unrolled T-step sampler is one call instead of T (faster where measured: docs/benchmarks.md).
        self.use_sampler_artifact = use_sampler_artifact

    def num_chunks(self, seconds: float) -> int:
        return max(1, math.ceil(seconds * self.spec.latent_rate / self.spec.chunk_frames - 1e-9))

    def stream(self, prefix_codes: list[int], settings: GenerationSettings) -> Iterator[AudioChunk]:
        spec = self.spec
        if len(prefix_codes) != spec.prefix_levels:
            raise ValueError(f"expected {spec.prefix_levels} conditioning tokens, got {len(prefix_codes)}")
        m, c, r = spec.chunks, spec.chunk_frames, spec.vae_context_frames
        s, p = spec.window_tokens, spec.prefix_levels
        total_samples = round(settings.seconds * spec.sample_rate)
        n_chunks = self.num_chunks(settings.seconds)
        first_steps = settings.first_steps or settings.steps
        schedules = {first_steps: angle_schedule(first_steps), settings.steps: angle_schedule(settings.steps)}
        tok_rng = PortableRng(settings.seed, STREAM_TOKENS)
        noise_rng = PortableRng(settings.seed, STREAM_NOISE)

        def noise(frames: int) -> Tensor:
            x = noise_rng.normal(spec.latent_channels * frames).reshape(spec.latent_channels, frames)
            self._record("noise", {"values": x})
            return torch.from_numpy(x)[None]

        z_win = noise(spec.window_frames)  # [1, C_lat, W]: future chunks are pure noise
        angles = torch.full((1, spec.window_frames), HALF_PI)
        tokens = torch.full((1, s), spec.null_token, dtype=torch.long)
        history = torch.zeros(1, spec.latent_channels, 2 * r)  # final frames before the window
        first_chunk = 0  # global index of the window's first chunk

        self.backend.lm_reset()
        prefix = torch.tensor(prefix_codes, dtype=torch.long)
        cb = spec.prefix_codebook_size
        if bool(((prefix < 0) | (prefix >= cb)).any()):
            raise ValueError(f"conditioning tokens must be integers in [0, {cb}), got {prefix_codes}")
        prefix_ids = spec.vocab_size + torch.arange(p) * cb + prefix
        next_logits = self._prefill(prefix_ids, 0)
        prefix_logits = next_logits
        pending: int | None = None
        emitted = 0

        for g in range(n_chunks):
            t0 = time.perf_counter()
            if g >= m:
                # Slide the window by one chunk; the dropped chunk's tail becomes decoder history.
                drop_lo, drop_hi = spec.chunk_token_range(first_chunk)
                n_drop = drop_hi - drop_lo
                history = torch.cat([history, z_win[:, :, :c]], dim=2)[:, :, -2 * r :] if r else history
                z_win = torch.cat([z_win[:, :, c:], noise(c)], dim=2)
                angles = torch.cat([angles[:, c:], torch.full((1, c), HALF_PI)], dim=1)
                tokens = torch.cat([tokens[:, n_drop:], torch.full((1, n_drop), spec.null_token)], dim=1)
                first_chunk += 1
                kept = s - n_drop
                next_logits = self._prefill(tokens[0, :kept], p) if kept else prefix_logits
                pending = None
            j = g - first_chunk
            lo, hi = spec.chunk_token_range(g)
            base, _ = spec.chunk_token_range(first_chunk)
            new_tokens = []
            for i in range(lo - base, hi - base):
                if pending is not None:
                    next_logits = self._decode(pending, p + i - 1)
                tok = sample_token(
                    next_logits.numpy(), settings.temperature, settings.top_k, float(tok_rng.uniform(1)[0])
                )
                tokens[0, i] = tok
                new_tokens.append(tok)
                pending = tok
            t1 = time.perf_counter()

            target = torch.zeros(1, spec.window_frames, dtype=torch.bool)
            target[:, j * c : (j + 1) * c] = True
            angles[:, j * c : (j + 1) * c] = HALF_PI
            steps = first_steps if g == 0 else settings.steps
            z_win = self._sample(z_win, angles, target, tokens, settings, steps, schedules[steps])
            angles[:, j * c : (j + 1) * c] = 0.0
            t2 = time.perf_counter()

            # Decode latent frames [gC - R, (g+1)C - R): the last C + 2R final frames.
            final = torch.cat([history, z_win[:, :, : (j + 1) * c]], dim=2)[:, :, -(c + 2 * r) :]
            audio = self._vae(final)
            skip = r * spec.hop_length if g == 0 else 0
            chunk_audio = audio[skip:]
            t3 = time.perf_counter()
            chunk_audio = chunk_audio[: max(0, total_samples - emitted)]
            latents = z_win[0, :, j * c : (j + 1) * c].numpy().copy()
            yield AudioChunk(g, chunk_audio.numpy(), emitted, new_tokens, latents, t1 - t0, t2 - t1, t3 - t2)
            emitted += chunk_audio.shape[0]

        if r and emitted < total_samples:
            # Flush: the last R frames, with zeros as right context (the offline decode's padding).
            t0 = time.perf_counter()
            tail = torch.cat([history, z_win[:, :, : (j + 1) * c]], dim=2)[:, :, -2 * r :]
            window = torch.cat([tail, torch.zeros(1, spec.latent_channels, c)], dim=2)
            audio = self._vae(window)[: r * spec.hop_length][: total_samples - emitted]
            empty = np.zeros((spec.latent_channels, 0), dtype=np.float32)
            yield AudioChunk(n_chunks, audio.numpy(), emitted, [], empty, 0.0, 0.0, time.perf_counter() - t0)

    def _sample(self, z, angles, target, tokens, settings: GenerationSettings, steps: int, schedule) -> Tensor:
        if self.use_sampler_artifact:
            out = self.backend.sample_window(z, angles, target, tokens, settings.guidance_scale, steps)
            if out is not None:
                payload = {"z": z, "angles": angles, "target": target.float(), "tokens": tokens}
                payload.update(guidance=torch.tensor([float(settings.guidance_scale)]), steps=steps, z_out=out)
                self._record("dpd_sampler", payload)
                return out
        return ddim_sample(
            self._dpd,
            z,
            angles,
            target,
            tokens,
            steps=steps,
            guidance_scale=settings.guidance_scale,
            null_token=self.spec.null_token,
            schedule=schedule,
        )

    def _record(self, event: str, payload: dict) -> None:
        if self.recorder is not None:
            self.recorder(event, payload)

    def _prefill(self, ids: Tensor, start: int) -> Tensor:
        out = self.backend.lm_prefill(ids, start)
        self._record("lm_prefill", {"ids": ids, "start_pos": start, "logits": out})
        return out

    def _decode(self, token: int, pos: int) -> Tensor:
        out = self.backend.lm_decode(token, pos)
        self._record("lm_decode", {"token": token, "pos": pos, "logits": out})
        return out

    def _dpd(self, z: Tensor, angles: Tensor, tokens: Tensor) -> Tensor:
        out = self.backend.dpd(z, angles, tokens)
        self._record("dpd", {"z": z, "angles": angles, "tokens": tokens, "v": out})
        return out

    def _vae(self, z: Tensor) -> Tensor:
        out = self.backend.vae_decode(z)
        self._record("vae_decode", {"z": z, "audio": out})
        return out


def generate(backend: Backend, spec: StreamSpec, prefix_codes: list[int], settings: GenerationSettings) -> np.ndarray:
    """The whole stream concatenated: float32 [round(seconds * sample_rate)]."""
    gen = StreamingGenerator(backend, spec)
    return np.concatenate([ch.audio for ch in gen.stream(prefix_codes, settings)])
