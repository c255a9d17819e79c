"""The LM's prefix rows as a learned map of the conditioner's codewords (training/lm_prefix.py)."""

from __future__ import annotations

import math

import pytest
import torch

from melody_edge.models.lm import LM_PRESETS, SemanticLM, lm_loss
from melody_edge.training.lm_prefix import (
    CodewordPrefix,
    first_token_window_ce,
    prefix_lm_losses,
    window_bag_ce,
)


def _lm_and_books(levels: int = 12, codes: int = 1024, d: int = 8) -> tuple[SemanticLM, torch.Tensor]:
    torch.manual_seed(0)
    lm = SemanticLM(LM_PRESETS["tiny"]).eval()
    books = torch.randn(levels, codes, d) * (0.5 ** torch.arange(levels)).view(-1, 1, 1)
    return lm, books


def test_synced_rows_make_the_plain_loss_equal_the_mapped_one():
    lm, books = _lm_and_books()
    prefix = CodewordPrefix(books, lm.config.dim)
    codes = torch.randint(0, 1024, (3, 12))
    semantic = torch.randint(0, 1024, (3, 20))
    before = lm_loss(lm, codes, semantic)
    mapped = prefix_lm_losses(lm, prefix, codes, semantic)[0]
    assert not torch.isclose(before, mapped)  # the map's random start differs from the LM's own rows
    prefix.sync(lm)
    torch.testing.assert_close(lm_loss(lm, codes, semantic), mapped)
    # Without a map (LMTrainSettings.codeword_prefix off) the LM's own rows are used: the plain loss.
    torch.testing.assert_close(prefix_lm_losses(lm, None, codes, semantic)[0], lm_loss(lm, codes, semantic))
    torch.testing.assert_close(lm.embed.weight[lm.config.vocab_size :], prefix.rows())


def test_fit_to_recovers_rows_that_are_a_linear_map_of_the_codewords():
    lm, books = _lm_and_books()
    truth = CodewordPrefix(books, lm.config.dim)
    with torch.no_grad():
        truth.level.normal_()
    truth.sync(lm)
    fitted = CodewordPrefix(books, lm.config.dim)
    fitted.fit_to(lm)
    torch.testing.assert_close(fitted.rows(), truth.rows(), atol=1e-4, rtol=1e-4)


def test_training_one_code_moves_an_unseen_code_with_the_same_codeword():
    """What makes held-out prompts reach the LM: rows are tied through their codewords."""
    lm, books = _lm_and_books()
    books[0, 7] = books[0, 3]  # code 7 of level 0 is never trained below but means what code 3 means
    prefix = CodewordPrefix(books, lm.config.dim)
    opt = torch.optim.SGD(prefix.parameters(), lr=1.0)
    before = prefix.rows()[7].detach().clone()
    codes = torch.randint(0, 1024, (2, 12))
    codes[:, 0] = 3
    prefix_lm_losses(lm, prefix, codes, torch.randint(0, 1024, (2, 20))).sum().backward()
    opt.step()
    rows = prefix.rows().detach()
    assert not torch.allclose(rows[7], before)
    torch.testing.assert_close(rows[7], rows[3])


def test_a_conditioner_that_does_not_fit_the_lm_is_refused():
    lm, _ = _lm_and_books()
    with pytest.raises(ValueError, match="conditioner"):
        CodewordPrefix(torch.randn(4, 1024, 8), lm.config.dim).check_fits(lm)
    with pytest.raises(ValueError, match="codebooks"):
        CodewordPrefix(torch.randn(1024, 8), lm.config.dim)


def test_first_token_window_ce_scores_the_prompt_prediction_against_the_whole_window():
    window = torch.tensor([[1, 1, 2, 2]])
    exact = torch.full((1, 4), -30.0)
    exact[0, 1:3] = 0.0  # half on token 1, half on token 2: the window's own distribution
    torch.testing.assert_close(first_token_window_ce(exact, window), torch.tensor(math.log(2.0)))
    first_only = torch.full((1, 4), -30.0)
    first_only[0, 1] = 0.0  # certain of the first token alone: infinite-ish cost on the other half
    assert first_token_window_ce(first_only, window) > 10.0


def test_window_bag_ce_scores_every_position_against_the_whole_window():
    window = torch.tensor([[1, 1, 2, 2]])
    bag = torch.full((1, 4, 4), -30.0)
    bag[0, :, 1:3] = 0.0  # every position predicts the window's own histogram
    torch.testing.assert_close(window_bag_ce(bag, window), torch.tensor(math.log(2.0)))
    # The next-token targets, predicted with certainty, miss half the window at every position.
    next_only = torch.full((1, 4, 4), -30.0)
    next_only[0, torch.arange(4), window[0]] = 0.0
    assert window_bag_ce(next_only, window) > 10.0
    # Only the last position off the window's histogram: a quarter of that position's cost.
    mixed = bag.clone()
    mixed[0, 3] = next_only[0, 3]
    expected = (3 * math.log(2.0) + float(window_bag_ce(next_only[:, 3:], window))) / 4
    torch.testing.assert_close(window_bag_ce(mixed, window), torch.tensor(expected))


def test_the_bag_term_is_the_third_loss_and_reaches_the_map():
    lm, books = _lm_and_books()
    prefix = CodewordPrefix(books, lm.config.dim)
    codes = torch.randint(0, 1024, (2, lm.config.prefix_levels))
    semantic = torch.randint(0, 1024, (2, 20))
    losses = prefix_lm_losses(lm, prefix, codes, semantic)
    assert losses.shape == (3,)
    # The one shared log-softmax gives what the standalone terms give on the same logits.
    with torch.no_grad():
        x = torch.cat([prefix.embed(codes), lm.embed(semantic[:, :-1])], dim=1)
        logits = lm.forward_embeddings(x)[:, lm.config.prefix_levels - 1 :]
    torch.testing.assert_close(losses[1].detach(), first_token_window_ce(logits[:, 0], semantic))
    torch.testing.assert_close(losses[2].detach(), window_bag_ce(logits, semantic))
    losses[2].backward()
    assert prefix.proj.weight.grad is not None and prefix.proj.weight.grad.abs().sum() > 0
