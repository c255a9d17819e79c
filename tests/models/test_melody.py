import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from melody_edge.models.checkpoint import CheckpointError
from melody_edge.models.config import ConfigError
from melody_edge.models.melody import MeLoDy, MelodyConfig, build_model, load_model, preset


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = build_model(preset("tiny"), seed=1)
    path = model.save(tmp_path_factory.mktemp("ckpt") / "tiny")
    return model, path


def test_round_trip_is_bit_exact(saved):
    model, path = saved
    loaded = MeLoDy.load(path)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_pickle_anywhere(saved):
    _, path = saved
    suffixes = {p.suffix for p in path.rglob("*") if p.is_file()}
    assert suffixes == {".json", ".safetensors"}


def test_presets_are_named_and_unknown_ones_refused():
    for name in ("tiny", "edge", "paper"):
        assert preset(name).name == name
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


def test_cross_component_mismatch_names_the_field():
    cfg = preset("tiny")
    with pytest.raises(ConfigError, match=r"dpd\.latent_channels"):
        cfg.replace(dpd=cfg.dpd.replace(latent_channels=8))
    with pytest.raises(ConfigError, match=r"lm\.max_seq_len"):
        cfg.replace(lm=cfg.lm.replace(max_seq_len=100))
    with pytest.raises(ConfigError, match="steps"):
        cfg.replace(steps=0)
    with pytest.raises(ConfigError, match=r"dpd\.token_feature_dim.*feature size 64"):
        cfg.replace(dpd=cfg.dpd.replace(token_feature_dim=128))


def test_dpd_from_another_tokenizer_is_refused(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "refit"
    shutil.copytree(path, bad)
    weights = load_file(str(bad / "tokenizer" / "model.safetensors"))
    weights["centroids"] = weights["centroids"].flip(0).contiguous()  # a refitted tokenizer: new ids
    save_file(weights, str(bad / "tokenizer" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="another tokenizer's tokens"):
        MeLoDy.load(bad)


def test_mismatched_weights_name_the_tensor(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    weights = load_file(str(bad / "lm" / "model.safetensors"))
    weights["embed.weight"] = weights["embed.weight"][:, :8].contiguous()
    save_file(weights, str(bad / "lm" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"embed\.weight has shape"):
        MeLoDy.load(bad)


def test_nan_weights_are_refused(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "nan"
    shutil.copytree(path, bad)
    weights = load_file(str(bad / "dpd" / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name][0] = float("nan")
    save_file(weights, str(bad / "dpd" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        MeLoDy.load(bad)


def test_config_that_disagrees_with_its_component_is_refused(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "disagree"
    shutil.copytree(path, bad)
    raw = json.loads((bad / "melody.json").read_text())
    raw["lm"]["rope_theta"] = 500.0
    (bad / "melody.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="differs from the 'lm' section"):
        MeLoDy.load(bad)


def test_corrupt_and_missing_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match=r"no melody\.json"):
        MeLoDy.load(tmp_path)
    bad = tmp_path / "trunc"
    shutil.copytree(path, bad)
    data = (bad / "vae" / "model.safetensors").read_bytes()
    (bad / "vae" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        MeLoDy.load(bad)
    (bad / "melody.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        MeLoDy.load(bad)


def test_load_model_resolves_config_or_checkpoint(saved):
    _, path = saved
    assert load_model(checkpoint=path).config.name == "tiny"
    assert load_model(config_name="tiny").config == preset("tiny")
    with pytest.raises(ConfigError, match="either"):
        load_model(config_name="tiny", checkpoint=path)
    assert MelodyConfig.from_dict(preset("edge").to_dict()) == preset("edge")
