"""LM prefix rows computed from the conditioner's RVQ codewords while the LM trains.

The LM gives each of its ``levels x codebook_size`` prefix codes an embedding row of its own. With a few
hundred captions most codes below the first level are seen in one caption or none, so held-out prompts
reach the LM through rows it never trained: the first 2026-12-05 demo LM had nearly the same
validation cross-entropy with every clip's prefix swapped for another clip's (2.457 against 2.463),
although the codewords of those held-out captions name their key to a linear probe 82 % of the time.
Computing every prefix row as one learned linear map of its code's codeword (plus a per-level vector)
ties codes of similar meaning together, so what the LM learns from one caption carries over to unseen
ones.

The rows are written into the LM's own embedding table after every step (:meth:`CodewordPrefix.sync`),
so the LM that is saved, exported and run is the unchanged :class:`SemanticLM`; the map itself is a
training-time module (saved beside the training state for resuming).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from melody_edge.models.lm import SemanticLM


class CodewordPrefix(nn.Module):
    """Prefix embedding rows ``[levels * codebook_size, dim]`` as ``proj(codeword / level_rms) + level``.

    ``codebooks [levels, codebook_size, D]`` is the fitted conditioner's RVQ; each level is scaled to unit
    RMS first because residual levels shrink (a shared map would otherwise see only the first levels).
    """

    def __init__(self, codebooks: Tensor, dim: int) -> None:
        super().__init__()
        if codebooks.dim() != 3:
            raise ValueError(f"expected RVQ codebooks [levels, codebook_size, D], got {tuple(codebooks.shape)}")
        books = codebooks.detach().float()
        rms = books.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-8)
        self.register_buffer("codebooks", books / rms)
        self.proj = nn.Linear(books.shape[-1], dim, bias=False)
        self.level = nn.Parameter(torch.zeros(books.shape[0], dim))

    @property
    def levels(self) -> int:
        return self.codebooks.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    def rows(self) -> Tensor:
        """All prefix rows, level-major: row ``level * codebook_size + code``."""
        return (self.proj(self.codebooks) + self.level[:, None]).reshape(-1, self.level.shape[1])

    def embed(self, codes: Tensor) -> Tensor:
        """codes ``[B, levels]`` -> prefix embeddings ``[B, levels, dim]`` (the same values as :meth:`rows`;
        only the B x levels codewords in use go through the map, not all levels x codebook_size)."""
        levels = torch.arange(self.levels, device=codes.device)
        return self.proj(self.codebooks[levels, codes.long()]) + self.level

    def check_fits(self, lm: SemanticLM) -> None:
        c = lm.config
        if (c.prefix_levels, c.prefix_codebook_size, c.dim) != (self.levels, self.codebook_size, self.level.shape[1]):
            raise ValueError(
                f"the conditioner's RVQ ({self.levels} levels x {self.codebook_size} codes) and this map "
                f"(dim {self.level.shape[1]}) do not fit the LM's prefix ({c.prefix_levels} x "
                f"{c.prefix_codebook_size}, dim {c.dim}); train the LM with the conditioner of the same run"
            )

    @torch.no_grad()
    def fit_to(self, lm: SemanticLM) -> None:
        """Least-squares map onto the LM's current prefix rows: the closest start to the LM as it is."""
        self.check_fits(lm)
        y = lm.embed.weight[lm.config.vocab_size :].double()
        d = self.codebooks.shape[-1]
        one_hot = torch.eye(self.levels, dtype=torch.float64).repeat_interleave(self.codebook_size, dim=0)
        x = torch.cat([self.codebooks.reshape(-1, d).double(), one_hot], dim=1)  # codeword, then its level
        # A small ridge in float64: unused codes repeat codewords, and a rank-deficient solve in float32
        # gave a start that differed between identical runs.
        gram = x.T @ x + 1e-6 * torch.eye(x.shape[1], dtype=torch.float64)
        solution = torch.linalg.solve(gram, x.T @ y)
        self.proj.weight.copy_(solution[:d].T)
        self.level.copy_(solution[d:])

    @torch.no_grad()
    def sync(self, lm: SemanticLM) -> None:
        """Write the rows into the LM's embedding table, where inference and export read them."""
        lm.embed.weight[lm.config.vocab_size :] = self.rows().to(lm.embed.weight.dtype)


def prefix_lm_losses(
    model: SemanticLM, prefix: CodewordPrefix | None, prefix_codes: Tensor, semantic: Tensor
) -> Tensor:
    """[next-token CE (:func:`melody_edge.models.lm.lm_loss`), :func:`first_token_window_ce`,
    :func:`window_bag_ce`], with the prefix rows from ``prefix`` (gradients reach its map), or from the LM's
    own table when it is None."""
    rows = prefix.embed(prefix_codes) if prefix is not None else model.embed(model.prefix_ids(prefix_codes))
    x = torch.cat([rows, model.embed(semantic[:, :-1].long())], dim=1)
    logits = model.forward_embeddings(x)[:, model.config.prefix_levels - 1 :]
    # One log-softmax for all three terms: the [B, S, V] normalisation is the costly part of each.
    logp = F.log_softmax(logits.float(), dim=-1)
    ce = -logp.gather(2, semantic.long()[..., None]).mean()
    return torch.stack([ce, _first_nll(logp[:, 0], semantic), _bag_nll(logp, semantic)])


def first_token_window_ce(first_logits: Tensor, semantic: Tensor) -> Tensor:
    """Cross-entropy of the prompt-only prediction (logits [B, V] at the last prefix position) against every
    token of its window [B, S].

    Only the first token of a window is predicted from the prompt alone; once a few tokens are in context,
    they say more about the music than the prompt does, so the plain loss gives the prompt one target in
    S. Windows start at arbitrary points of a piece, so the first token is a draw from the window's tokens,
    and scoring the prompt-only prediction against all of them estimates the same distribution with S
    targets instead of one: the prompt (its key, instruments, style) is what has to explain them.
    """
    return _first_nll(F.log_softmax(first_logits.float(), dim=-1), semantic)


def _first_nll(first_logp: Tensor, semantic: Tensor) -> Tensor:
    """:func:`first_token_window_ce` from log-probabilities [B, V]."""
    return -first_logp.gather(1, semantic.long()).mean()


def window_bag_ce(logits: Tensor, semantic: Tensor) -> Tensor:
    """Cross-entropy of every position's prediction (logits [B, S, V]) against the token histogram of its
    whole window [B, S]: :func:`first_token_window_ce` at every position, not only the prompt-only one.

    Sampled windows of the demo LM lose the prompt's key as they go (2026-12-06: the key read from the
    tokens of the first 2.5 s chunk right for 63 of 248 windows, the fourth chunk for 29), although its
    prompt-only distribution names the right key for 33 of 62 held-out captions. Next-token CE alone lets
    each step wander; this term asks every step to keep predicting what the whole window holds (its key,
    instruments), as inferred from the prompt and the context so far. With weight w the optimum per step
    is the next-token target mixed with the window's histogram at w / (1 + w).
    """
    return _bag_nll(F.log_softmax(logits.float(), dim=-1), semantic)


def _bag_nll(logp: Tensor, semantic: Tensor) -> Tensor:
    """:func:`window_bag_ce` from log-probabilities [B, S, V]."""
    counts = torch.zeros(semantic.shape[0], logp.shape[-1], device=logp.device)
    counts.scatter_add_(1, semantic.long(), torch.ones_like(semantic, dtype=counts.dtype))
    bag = counts / semantic.shape[1]
    # [B, S, V] @ [B, V, 1]: each position's log-probabilities weighted by the histogram, without a
    # [B, S, V] product tensor.
    return -torch.bmm(logp, bag[:, :, None]).mean()
