"""Classifier-free guidance on the semantic LM, packaged as an LM with the same two methods.

An LM trained with prompt dropout (``train lm --prompt-dropout``) also knows the generic prompt's
12 codes (``MelodyConfig.lm_null_codes``). :class:`GuidedLM` runs two rows through a KV cache of
batch 2: row 0 reads the caller's ids, row 1 the same ids with the prefix positions replaced by the
generic prompt's, and it returns ``u + scale * (c - u)`` on the logits. ``prefill(ids [1, T], start)``
and ``decode(token [1, 1], pos)`` keep the shapes of :class:`~melody_edge.models.lm.SemanticLM`, so
the runtime, every exported program and the apps stay as they are: the guidance scale is fixed when
the LM is built (or exported), like the sampler's schedule.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from .lm import KVCache, LMConfig, SemanticLM


def validate_null_codes(codes: tuple[int, ...] | list[int], config: LMConfig) -> None:
    if len(codes) != config.prefix_levels:
        raise ValueError(f"lm_null_codes needs {config.prefix_levels} codes (one per prefix level), got {len(codes)}")
    bad = [c for c in codes if not 0 <= int(c) < config.prefix_codebook_size]
    if bad:
        raise ValueError(f"lm_null_codes must lie in [0, {config.prefix_codebook_size}), got {bad}")


class GuidedLM(SemanticLM):
    """A :class:`SemanticLM` with cache batch 2 that guides against fixed unconditional prefix codes.

    Built by :func:`guided_lm` from a trained (or quantized) LM; a subclass, so its parameter names and
    state dict are those of the LM it came from, and the export swaps (``export/``) apply to it after.
    """

    scale: float
    null_ids: Tensor  # [max_seq_len] embedding id of the unconditional row per position; -1: the caller's id

    def prefill(self, ids: Tensor, start_pos: Tensor | int) -> Tensor:
        """ids [1, T] at positions start_pos.. -> guided logits [1, T, vocab_size]."""
        if ids.shape[0] != 1:
            raise ValueError(
                f"a guided LM streams one sequence (its cache holds its two rows), got batch {ids.shape[0]}"
            )
        start = torch.as_tensor(start_pos, dtype=torch.long, device=ids.device).reshape(1)
        positions = start + torch.arange(ids.shape[1], device=ids.device)
        null = torch.index_select(self.null_ids, 0, positions)[None]
        uncond = torch.where(null >= 0, null, ids)
        logits = super().prefill(torch.cat([ids, uncond], dim=0), start)
        cond, free = logits[:1], logits[1:]
        return free + self.scale * (cond - free)


def with_cache_batch(lm: SemanticLM, rows: int) -> SemanticLM:
    """A copy of ``lm`` (the same weights) whose KV cache holds ``rows`` sequences; ``lm`` is left as it is."""
    out = copy.deepcopy(lm)
    c = out.config = lm.config.replace(cache_batch_size=rows)
    for layer in out.layers:
        if type(layer.cache) is not KVCache:
            raise TypeError(
                f"a cache of batch {rows} needs the LM's own KVCache; got {type(layer.cache).__name__} (swap after)"
            )
        k = layer.cache.k
        layer.cache = KVCache(rows, c.n_heads, c.max_seq_len, c.head_dim).to(device=k.device, dtype=k.dtype)
    return out.eval()


def guided_lm(lm: SemanticLM, null_codes: tuple[int, ...] | list[int], scale: float) -> GuidedLM:
    """A guided copy of ``lm``: the same weights, a KV cache of batch 2 (``lm`` is left as it is)."""
    validate_null_codes(null_codes, lm.config)
    out = with_cache_batch(lm, 2)
    out.__class__ = GuidedLM
    c = out.config
    out.scale = float(scale)
    table = torch.full((c.max_seq_len,), -1, dtype=torch.long)
    table[: c.prefix_levels] = lm.prefix_ids(torch.tensor([list(null_codes)]))[0]
    out.register_buffer("null_ids", table.to(out.cache_positions.device), persistent=False)
    return out.eval()


def streaming_lm(
    lm: SemanticLM, null_codes: tuple[int, ...], scale: float | None, default_scale: float = 1.0
) -> SemanticLM:
    """The LM the runtime streams with: ``lm`` itself at scale 1, else a :class:`GuidedLM`.

    ``scale`` None takes ``default_scale`` (the checkpoint's ``lm_guidance_scale``).
    """
    scale = default_scale if scale is None else float(scale)
    if not scale >= 0:
        raise ValueError(f"LM guidance scale must be >= 0 (1 = off), got {scale}")
    if scale == 1.0:
        return lm
    if not null_codes:
        raise ValueError(
            f"LM guidance {scale} needs the generic prompt's codes, and this checkpoint has none "
            "(lm_null_codes is empty: its LM was not trained with --prompt-dropout). Use LM guidance 1."
        )
    return guided_lm(lm, null_codes, scale)
