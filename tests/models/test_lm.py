import pytest
import torch

from melody_edge.models.config import ConfigError
from melody_edge.models.lm import LM_PRESETS, LMConfig, SemanticLM, lm_loss


def tiny_lm(**overrides) -> SemanticLM:
    torch.manual_seed(0)
    return SemanticLM(LM_PRESETS["tiny"].replace(**overrides)).eval()


@torch.no_grad()
def test_kv_cache_decoding_equals_full_causal_forward():
    model = tiny_lm()
    ids = torch.cat([model.prefix_ids(torch.randint(0, 1024, (1, 12))), torch.randint(0, 1024, (1, 60))], 1)
    full = model(ids)
    model.reset_cache()
    steps = [model.prefill(ids[:, :30], 0)]
    steps += [model.decode(ids[:, i : i + 1], i)[:, None] for i in range(30, ids.shape[1])]
    cached = torch.cat(steps, 1)
    rel = (full - cached).abs().max() / full.abs().max()
    assert rel < 1e-5


@torch.no_grad()
def test_prefill_with_tensor_start_and_stale_slots_are_masked():
    model = tiny_lm()
    ids = torch.randint(0, 1024, (1, 40))
    model.reset_cache()
    model.prefill(torch.randint(0, 1024, (1, 60)), 0)  # fill the cache with another sequence
    model.prefill(ids[:, :12], torch.tensor([0]))
    again = model.prefill(ids[:, 12:], torch.tensor([12]))
    assert torch.allclose(again, model(ids)[:, 12:], atol=1e-5)


def test_prefix_ids_use_one_offset_per_level():
    model = tiny_lm()
    ids = model.prefix_ids(torch.zeros(1, 12, dtype=torch.long))
    assert ids.tolist() == [[1024 + 1024 * level for level in range(12)]]
    assert int(model.prefix_ids(torch.full((1, 12), 1023)).max()) == model.config.embedding_rows - 1


def test_lm_loss_overfits_a_single_example():
    torch.manual_seed(0)
    model = SemanticLM(LM_PRESETS["tiny"]).train()
    prefix = torch.randint(0, 1024, (1, 12))
    semantic = torch.randint(0, 1024, (1, 64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss = lm_loss(model, prefix, semantic)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


def test_paper_lm_size_is_within_five_percent():
    with torch.device("meta"):
        model = SemanticLM(LM_PRESETS["paper"])
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 429.5e6 - 1) < 0.05


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_heads": 5}, "n_heads"),
        ({"max_seq_len": 12}, "max_seq_len"),
        ({"dim": 0}, "dim"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        LMConfig(**{**LM_PRESETS["tiny"].to_dict(), **overrides})


def test_config_json_round_trip_and_unknown_field():
    cfg = LM_PRESETS["edge"]
    assert LMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="n_layer"):
        LMConfig.from_dict({**cfg.to_dict(), "n_layer": 3})
    with pytest.raises(ConfigError, match="dim: expected an integer"):
        LMConfig.from_dict({**cfg.to_dict(), "dim": "wide"})
