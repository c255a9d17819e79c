"""Semantic tokens from a learned audio encoder: k-means over one hidden layer of a local Hugging Face model.

This is how MeLoDy and MusicLM make their tokens (MeLoDy: its own Wav2Vec2-Conformer; MusicLM: w2v-BERT
layer 7). Any ``transformers`` audio encoder that returns ``hidden_states`` plugs in: MERT-v1 (24 kHz,
75 Hz frames, ``trust_remote_code``), w2v-BERT 2.0 (16 kHz input, 50 Hz), HuBERT and wav2vec 2.0 (16 kHz,
50 Hz). The audio is resampled to the encoder's rate, the chosen layer's frames are averaged to the token
rate, standardised, and each token is the nearest of 1024 centroids fitted by :meth:`fit`.

The encoder's weights are not copied into checkpoints (MERT-v1-95M alone is 380 MB): the config names the
directory and records the sha256 of its weights, and the encoder is loaded on first use, so a checkpoint
with this tokenizer exports and generates without it (only the centroids, which the DPD embeds, are stored).
Offline only: nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import ConfigBase, require
from .semantic_tokenizer import CentroidTokenizer

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_INSTALL_HINT = (
    "Download the encoder once on a machine with network access, for example "
    "`huggingface-cli download m-a-p/MERT-v1-95M --local-dir DIR`, install `transformers` "
    "(`pip install 'melody-edge[text]'`), and pass the directory (`melody-edge train tokenizer --encoder DIR`)."
)


class AudioEncoderUnavailable(RuntimeError):
    """The tokenizer's audio encoder cannot be loaded; the message says what to install or pass."""


@dataclasses.dataclass(frozen=True)
class EncoderTokenizerConfig(ConfigBase):
    """k-means over layer ``layer`` of the audio encoder stored in ``encoder_dir``."""

    encoder_dir: str
    layer: int
    feature_dim: int  # the width of that layer (768 for MERT-v1-95M, 1024 for w2v-BERT 2.0)
    encoder_sample_rate: int = 24000  # what the encoder expects: 24000 for MERT, 16000 for w2v-BERT / HuBERT
    encoder_frame_rate: int = 75  # its hidden states per second: 75 for MERT, 50 for w2v-BERT / HuBERT
    trust_remote_code: bool = False  # MERT ships its model code in its directory; this runs that code
    encoder_sha256: str = ""  # of the weight files when the centroids were fitted; "" skips the check
    sample_rate: int = 24000
    token_rate: int = 25
    vocab_size: int = 1024
    kind: str = "encoder"

    def validate(self) -> None:
        require(self.kind == "encoder", "kind", f"{self.kind!r} is not this config's kind; use 'encoder'")
        require(bool(self.encoder_dir), "encoder_dir", "must name the encoder's local model directory")
        require(self.layer >= 0, "layer", "must be >= 0 (0 is the encoder's input embedding)")
        require(self.feature_dim >= 1, "feature_dim", "must be the encoder layer's width (>= 1)")
        require(self.sample_rate > 0 and self.encoder_sample_rate > 0, "encoder_sample_rate", "rates must be > 0")
        require(self.token_rate > 0, "token_rate", "must be > 0 (25 for MeLoDy)")
        require(
            self.sample_rate % self.token_rate == 0,
            "token_rate",
            f"must divide sample_rate {self.sample_rate} so every token covers a whole number of samples",
        )
        require(
            self.encoder_frame_rate >= self.token_rate and self.encoder_frame_rate % self.token_rate == 0,
            "encoder_frame_rate",
            f"{self.encoder_frame_rate} Hz must be a whole multiple of the token rate {self.token_rate} Hz "
            "(frames are averaged into tokens)",
        )
        require(self.vocab_size >= 2, "vocab_size", "must be >= 2 (1024 for MeLoDy)")
        require(
            self.encoder_sha256 == "" or len(self.encoder_sha256) == 64,
            "encoder_sha256",
            "must be empty or a sha256 hex digest",
        )

    @property
    def hop_length(self) -> int:
        return self.sample_rate // self.token_rate

    @property
    def frames_per_token(self) -> int:
        return self.encoder_frame_rate // self.token_rate


def encoder_weights_sha256(model_dir: str | Path) -> str:
    """sha256 over the directory's weight files (name and bytes, in name order): which encoder this is."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise AudioEncoderUnavailable(f"{model_dir}: no weight file (*.safetensors / *.bin). " + _INSTALL_HINT)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resample(audio: Tensor, orig: int, new: int, zero_crossings: int = 16, rolloff: float = 0.95) -> Tensor:
    """Band-limited resampling of ``[B, N]`` from ``orig`` to ``new`` Hz -> ``[B, ceil(N * new / orig)]``.

    Windowed-sinc interpolation: each of the ``new / g`` output phases (g = gcd) is a strided convolution
    with its own Hann-windowed sinc, cut off at ``rolloff`` of the lower Nyquist frequency.
    """
    if orig == new:
        return audio
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    cutoff = min(up, down) * rolloff  # in cycles per input sample, scaled by ``down``
    width = math.ceil(zero_crossings * down / cutoff)
    taps = torch.arange(-width, width + down, dtype=torch.float64) / down
    phases = -torch.arange(up, dtype=torch.float64)[:, None] / up
    t = ((phases + taps[None]) * cutoff).clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / (2 * zero_crossings)).square()
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t))
    kernels = (sinc * window * cutoff / down).to(audio.dtype)[:, None]  # [up, 1, K]
    b, n = audio.shape
    padded = torch.nn.functional.pad(audio[:, None], (width, width + down))
    out = torch.nn.functional.conv1d(padded, kernels, stride=down)  # [B, up, L]
    return out.transpose(1, 2).reshape(b, -1)[:, : math.ceil(n * new / orig)]


class EncoderSemanticTokenizer(CentroidTokenizer):
    """Implements :class:`~melody_edge.models.semantic_tokenizer.SemanticTokenizer` over a learned encoder."""

    def __init__(self, config: EncoderTokenizerConfig) -> None:
        super().__init__(config)
        self._encoder: tuple[Any, Any] | None = None  # (model, feature extractor), loaded on first use

    def encoder(self) -> tuple[Any, Any]:
        """Load (once) the encoder named by the config; raise :class:`AudioEncoderUnavailable` with the fix."""
        if self._encoder is None:
            self._encoder = load_audio_encoder(self.config)
        return self._encoder

    @torch.no_grad()
    def features(self, audio: Tensor) -> Tensor:
        """audio ``[B, N]`` at 24 kHz -> ``[B, N // hop, feature_dim]``: layer ``layer``, averaged per token.

        The encoder's front end gives a frame or two fewer than ``seconds * frame_rate``; the last frame is
        repeated to fill the final token (at most one token sees a repeated frame).
        """
        audio = self._check_audio(audio)
        cfg = self.config
        b, t = audio.shape[0], audio.shape[1] // cfg.hop_length
        if t == 0:
            return audio.new_zeros(b, 0, cfg.feature_dim)
        model, extractor = self.encoder()
        x = resample(audio[:, : t * cfg.hop_length], cfg.sample_rate, cfg.encoder_sample_rate)
        inputs = extractor(list(x.numpy()), sampling_rate=cfg.encoder_sample_rate, return_tensors="pt")
        hidden = model(**inputs, output_hidden_states=True).hidden_states
        if cfg.layer >= len(hidden):
            raise ValueError(
                f"tokenizer layer {cfg.layer}: {cfg.encoder_dir} has only {len(hidden)} hidden states "
                f"(0 .. {len(hidden) - 1}); refit the tokenizer with a lower --encoder-layer"
            )
        h = hidden[cfg.layer].to(torch.float32)
        if h.shape[-1] != cfg.feature_dim:
            raise ValueError(
                f"tokenizer feature_dim {cfg.feature_dim} differs from {cfg.encoder_dir}'s layer width "
                f"{h.shape[-1]}: the checkpoint's tokenizer was fitted on another encoder"
            )
        need = t * cfg.frames_per_token
        if h.shape[1] < need:
            h = torch.cat([h, h[:, -1:].expand(-1, need - h.shape[1], -1)], dim=1)
        return h[:, :need].reshape(b, t, cfg.frames_per_token, -1).mean(2)


ENCODER_ENV = "MELODY_AUDIO_ENCODER"


def load_audio_encoder(config: EncoderTokenizerConfig) -> tuple[Any, Any]:
    """(model, feature extractor) from ``config.encoder_dir``, offline, checked against ``encoder_sha256``.

    ``$MELODY_AUDIO_ENCODER`` names another directory for it (a checkpoint moved to a machine where the
    encoder lives elsewhere); the sha256 check still applies.
    """
    model_dir = Path(os.environ.get(ENCODER_ENV) or config.encoder_dir)
    if not (model_dir / "config.json").is_file():
        raise AudioEncoderUnavailable(
            f"the semantic tokenizer needs the audio encoder at {model_dir}, which is not a model directory "
            f"(no config.json). Point ${ENCODER_ENV} at the encoder's directory if it lives elsewhere. " + _INSTALL_HINT
        )
    if config.encoder_sha256 and encoder_weights_sha256(model_dir) != config.encoder_sha256:
        raise AudioEncoderUnavailable(
            f"{model_dir} holds other weights than the encoder this tokenizer's centroids were fitted on "
            f"(sha256 {config.encoder_sha256[:12]}...); restore that encoder, or refit the tokenizer "
            "(`melody-edge train tokenizer --encoder DIR`) and retrain the DPD and LM on its tokens"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoFeatureExtractor, AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise AudioEncoderUnavailable("the `transformers` package is missing. " + _INSTALL_HINT) from None
    options = {"local_files_only": True, "trust_remote_code": config.trust_remote_code}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar in the middle of a training log is noise
    try:
        extractor = AutoFeatureExtractor.from_pretrained(str(model_dir), **options)
        model = AutoModel.from_pretrained(str(model_dir), **options)
    except (OSError, ValueError) as exc:
        raise AudioEncoderUnavailable(f"cannot load the audio encoder from {model_dir}: {exc}") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval().requires_grad_(False), extractor


def encoder_tokenizer_config(
    encoder_dir: str | Path, layer: int, trust_remote_code: bool = False, vocab_size: int = 1024
) -> EncoderTokenizerConfig:
    """The config for an encoder directory, its rates and width read from the model itself."""
    config = EncoderTokenizerConfig(
        encoder_dir=str(Path(encoder_dir).resolve()),
        layer=layer,
        feature_dim=1,
        trust_remote_code=trust_remote_code,
        vocab_size=vocab_size,
    )
    model, extractor = load_audio_encoder(config)
    rate = int(getattr(extractor, "sampling_rate", 0) or 0)
    if rate <= 0:
        raise AudioEncoderUnavailable(f"{encoder_dir}: its feature extractor names no sampling_rate")
    probe = torch.zeros(1, rate)  # one second at the encoder's own rate: how many frames it makes
    with torch.no_grad():
        inputs = extractor(list(probe.numpy()), sampling_rate=rate, return_tensors="pt")
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    if not 0 <= layer < len(hidden):
        raise ValueError(f"--encoder-layer {layer}: {encoder_dir} has hidden states 0 .. {len(hidden) - 1}")
    frames = hidden[layer].shape[1]
    # Convolutional front ends drop a frame or two at the edges: round to the nearest multiple of 25 Hz.
    frame_rate = max(25, round(frames / 25) * 25)
    return dataclasses.replace(
        config,
        feature_dim=int(hidden[layer].shape[-1]),
        encoder_sample_rate=rate,
        encoder_frame_rate=frame_rate,
        encoder_sha256=encoder_weights_sha256(encoder_dir),
    )
