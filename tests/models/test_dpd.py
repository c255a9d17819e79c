import itertools
import math

import pytest
import torch

from melody_edge.models.config import ConfigError
from melody_edge.models.diffusion import angle_schedule, ddim_sample, uniform_angle_schedule
from melody_edge.models.dpd import (
    DPD_PRESETS,
    DPDConfig,
    DualPathDiffusion,
    dpd_loss_terms,
    overlap_add,
    segment,
)


def tiny_dpd(**overrides) -> DualPathDiffusion:
    torch.manual_seed(0)
    return DualPathDiffusion(DPD_PRESETS["tiny"].replace(**overrides)).eval()


# The DPD as the paper has it (no token extras, as in the `paper` preset) and as the trained presets have it.
PAPER_FORM = {"frame_token_film": False, "token_feature_dim": 0, "token_prior": False}
FORMS = pytest.mark.parametrize("form", [PAPER_FORM, {}], ids=["paper-form", "tiny-preset"])


def test_segment_overlap_add_round_trip():
    x = torch.randn(2, 2500, 8)
    seg = segment(x, 64)
    assert seg.shape == (2, 80, 64, 8)
    assert torch.allclose(overlap_add(seg, 2500), x)


def test_angle_schedule_sums_to_half_pi_with_big_steps_first():
    for steps in (1, 5, 10, 20):
        w = angle_schedule(steps)
        assert len(w) == steps
        assert math.isclose(sum(w), math.pi / 2, rel_tol=1e-12)
        assert all(a >= b for a, b in itertools.pairwise(w))
    assert math.isclose(sum(uniform_angle_schedule(7)), math.pi / 2)


@torch.no_grad()
def test_forward_shapes_and_null_token():
    model = tiny_dpd()
    c = model.config
    z = torch.randn(2, 16, c.window_frames)
    tokens = torch.full((2, c.window_tokens), c.null_token)
    v = model(z, torch.rand(2, c.window_frames), tokens)
    assert v.shape == z.shape and torch.isfinite(v).all()


@torch.no_grad()
def test_frame_token_film_adds_no_weights_and_conditions_each_frame_on_its_token():
    on = tiny_dpd()
    c = on.config
    assert c.frame_token_film and not DPDConfig().frame_token_film
    off = DualPathDiffusion(c.replace(frame_token_film=False)).eval()
    off.load_state_dict(on.state_dict())  # same parameters: the flag only routes the embedding
    torch.manual_seed(1)
    z, angles = torch.randn(1, 16, c.window_frames), torch.rand(1, c.window_frames)
    tokens = torch.randint(c.token_vocab, (1, c.window_tokens))
    assert not torch.allclose(on(z, angles, tokens), off(z, angles, tokens))
    # Through FiLM alone (no attention), changing the last token moves the frames of that token
    # most, so the term is aligned with the frames it belongs to.
    for block in on.blocks:
        block.inter.cross_attn.wo.weight.zero_()
        block.inter.self_attn.wo.weight.zero_()
    other = tokens.clone()
    other[0, -1] = (other[0, -1] + 1) % c.token_vocab
    diff = (on(z, angles, tokens) - on(z, angles, other)).abs().sum(1)[0]
    last = c.frames_per_token
    assert diff[-last:].mean() > 10 * diff[: -c.segment_frames].mean()


class CountingVelocity:
    def __init__(self, model):
        self.model, self.calls, self.batches = model, 0, []

    def __call__(self, z, angles, tokens):
        self.calls += 1
        self.batches.append(z.shape[0])
        return self.model(z, angles, tokens)


@torch.no_grad()
@FORMS
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_sampler_calls_network_once_per_step_with_guidance_batched(steps, form):
    model = tiny_dpd(**form)
    c = model.config
    fn = CountingVelocity(model)
    z = torch.randn(1, 16, c.window_frames)
    target = torch.ones(1, c.window_frames, dtype=torch.bool)
    angles = torch.full((1, c.window_frames), math.pi / 2)
    tokens = torch.randint(0, 1024, (1, c.window_tokens))
    out = ddim_sample(fn, z, angles, target, tokens, steps, 2.5, c.null_token)
    assert fn.calls == steps and fn.batches == [2] * steps
    assert torch.isfinite(out).all()


@torch.no_grad()
@FORMS
def test_continuation_and_inpainting_leave_kept_frames_unchanged(form):
    model = tiny_dpd(**form)
    c = model.config
    cf = c.chunk_frames
    z = torch.randn(1, 16, c.window_frames)
    tokens = torch.randint(0, 1024, (1, c.window_tokens))
    # Continuation: only the last chunk is denoised.
    target = torch.zeros(1, c.window_frames, dtype=torch.bool)
    target[:, -cf:] = True
    angles = torch.where(target, math.pi / 2, 0.0)
    out = ddim_sample(model, z, angles, target, tokens, 4, 2.5, c.null_token)
    assert torch.equal(out[..., :-cf], z[..., :-cf])
    assert not torch.allclose(out[..., -cf:], z[..., -cf:])
    # Inpainting: a gap in the middle.
    gap = torch.zeros_like(target)
    gap[:, 1000:1300] = True
    out = ddim_sample(model, z, torch.where(gap, math.pi / 2, 0.0), gap, tokens, 3, 2.5, c.null_token)
    assert torch.equal(out[..., :1000], z[..., :1000]) and torch.equal(out[..., 1300:], z[..., 1300:])


def test_sampler_is_exact_with_the_true_velocity():
    # With an oracle velocity the angle-DDIM update lands exactly on z0 after any number of steps.
    z0 = torch.randn(1, 16, 100)
    eps = torch.randn(1, 16, 100)

    def oracle(z, angles, tokens):
        a = angles[:, None]
        return torch.cos(a) * eps.repeat(z.shape[0], 1, 1) - torch.sin(a) * z0.repeat(z.shape[0], 1, 1)

    target = torch.ones(1, 100, dtype=torch.bool)
    out = ddim_sample(oracle, eps.clone(), torch.full((1, 100), math.pi / 2), target, torch.zeros(1, 10), 4, 2.5, 0)
    assert torch.allclose(out, z0, atol=1e-5)


@FORMS
def test_velocity_loss_overfits_a_single_example(form):
    # One example = fixed latents, tokens, per-chunk angles and noise (the generator is re-seeded).
    torch.manual_seed(0)
    model = DualPathDiffusion(DPD_PRESETS["tiny"].replace(window_frames=400, **form)).train()
    c = model.config
    z0 = (0.5 * torch.randn(1, 16, 1)).expand(1, 16, c.window_frames).contiguous()
    tokens = torch.randint(0, 1024, (1, c.window_tokens))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator()
    losses = []
    for _ in range(200):
        gen.manual_seed(0)
        loss = dpd_loss_terms(model, z0, tokens, generator=gen, cond_drop_prob=0.0).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(losses[-5:]) / 5 < losses[0] / 10


class _ExactVelocity(torch.nn.Module):
    """For clean latents of 0, z = sin d * eps and the target v = cos d * eps = z * cos d / sin d."""

    def __init__(self, config: DPDConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, z, angles, tokens):
        return z * torch.cos(angles)[:, None] / torch.sin(angles)[:, None].clamp_min(1e-6)


def test_loss_terms_give_the_clean_estimate_and_the_conditioned_chunks():
    c = DPD_PRESETS["tiny"].replace(window_frames=400)
    model = _ExactVelocity(c)
    z0 = torch.zeros(3, c.latent_channels, c.window_frames)
    tokens = torch.randint(0, c.token_vocab, (3, c.window_tokens))
    terms = dpd_loss_terms(model, z0, tokens, generator=torch.Generator().manual_seed(0), cond_drop_prob=0.0)
    # The exact velocity: no loss, and the estimate cos d * z - sin d * v is the clean latent.
    assert float(terms.loss) < 1e-6 and float(terms.x0.abs().max()) < 1e-3
    assert terms.conditioned.shape == (3, c.chunks) and bool(terms.conditioned.all())
    gen = torch.Generator()
    dropped = dpd_loss_terms(model, z0, tokens, generator=gen.manual_seed(0), cond_drop_prob=1.0)
    assert not bool(dropped.conditioned.any())
    # Chunks cut to pure noise with null tokens are not conditioned; the chunks before the cut are.
    cut = dpd_loss_terms(model, z0, tokens, generator=gen.manual_seed(0), cond_drop_prob=0.0, future_null_prob=1.0)
    for row in cut.conditioned.tolist():
        k = row.index(False) if False in row else len(row)
        assert k >= 1 and row == [True] * k + [False] * (len(row) - k)


def test_paper_dpd_size_is_within_five_percent():
    with torch.device("meta"):
        model = DualPathDiffusion(DPD_PRESETS["paper"])
    assert abs(sum(p.numel() for p in model.parameters()) / 296.6e6 - 1) < 0.05


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"merge_widths": (8,)}, "merge_widths"),
        ({"merge_widths": (8, 7)}, r"merge_widths\[1\]"),
        ({"segment_frames": 63}, "segment_frames"),
        ({"window_frames": 2501}, "window_frames"),
        ({"cond_drop_prob": 1.5}, "cond_drop_prob"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        DPDConfig(**{**DPD_PRESETS["tiny"].to_dict(), **overrides})


@torch.no_grad()
def test_token_features_start_silent_then_make_like_sounding_tokens_alike():
    on = tiny_dpd()
    c = on.config
    assert c.token_feature_dim and not DPDConfig().token_feature_dim
    off = DualPathDiffusion(c.replace(token_feature_dim=0)).eval()
    state = {k: v for k, v in on.state_dict().items() if not k.startswith(("token_feature", "token_features"))}
    off.load_state_dict(state)
    torch.manual_seed(2)
    z, angles = torch.randn(1, 16, c.window_frames), torch.rand(1, c.window_frames)
    tokens = torch.randint(c.token_vocab, (1, c.window_tokens))
    # The projection starts at zero: weights trained without the centroid path behave exactly as before.
    assert torch.equal(on(z, angles, tokens), off(z, angles, tokens))
    feats = torch.randn(c.token_vocab, c.token_feature_dim)
    feats[7] = feats[3]  # two ids, one sound
    on.set_token_features(feats)
    assert torch.equal(on.token_features[c.null_token], torch.zeros(c.token_feature_dim))
    on.token_feature_proj.weight.normal_()
    on.token_embed.weight.zero_()  # ids alone now say nothing: only the centroid path tells tokens apart
    emb = on.embed_tokens(torch.tensor([[3, 7, 5]]))[0]
    assert torch.equal(emb[0], emb[1]) and not torch.allclose(emb[0], emb[2])
    assert not torch.allclose(on(z, angles, tokens), off(z, angles, tokens))


def test_token_features_refuse_the_wrong_tokenizer():
    model = tiny_dpd()
    c = model.config
    with pytest.raises(ValueError, match=r"\[1024, 64\].*dpd.token_feature_dim"):
        model.set_token_features(torch.zeros(c.token_vocab, 128))
    with pytest.raises(ValueError, match="NaN"):
        model.set_token_features(torch.full((c.token_vocab, 64), float("nan")))
    with pytest.raises(ValueError, match="token ids only"):
        DualPathDiffusion(c.replace(token_feature_dim=0)).set_token_features(torch.zeros(c.token_vocab, 64))


def _prior_dpd(**overrides) -> DualPathDiffusion:
    torch.manual_seed(0)
    return DualPathDiffusion(DPD_PRESETS["tiny"].replace(token_prior=True, **overrides)).eval()


@torch.no_grad()
def test_token_prior_velocity_is_the_gaussian_posterior_under_fitted_statistics():
    model = _prior_dpd()
    c = model.config
    gen = torch.Generator().manual_seed(0)
    b = 4
    tokens = torch.randint(c.token_vocab, (b, c.window_tokens), generator=gen)
    z = torch.randn(b, c.latent_channels, c.window_frames, generator=gen)
    angles = torch.rand(b, c.window_frames, generator=gen) * (math.pi / 2)
    # Random weights and a random prior: the network's output and the prior's velocity both count.
    _, v_prior = model.prior(z, angles, tokens)
    assert v_prior.abs().mean() > 0.1 and not torch.allclose(model(z, angles, tokens), v_prior)
    # A fitted prior with the output layer at zero (how training starts): the prior's velocity alone.
    mean = torch.randn(c.token_vocab + 1, c.latent_channels, generator=gen) * 2
    var = torch.rand(c.token_vocab + 1, c.latent_channels, generator=gen) * 0.5 + 0.05
    model.set_token_prior(mean, var)
    torch.nn.init.zeros_(model.out_proj.weight)
    torch.nn.init.zeros_(model.out_proj.bias)
    assert torch.equal(model(z, angles, tokens), model.prior(z, angles, tokens)[1])
    # Data drawn from that prior: the network (still only the prior) reaches the Bayes error s2 / q.
    m = mean[tokens].repeat_interleave(c.frames_per_token, 1).transpose(1, 2)
    s2 = var[tokens].repeat_interleave(c.frames_per_token, 1).transpose(1, 2)
    x0 = m + s2.sqrt() * torch.randn(z.shape, generator=gen)
    eps = torch.randn(z.shape, generator=gen)
    cos, sin = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    target = cos * eps - sin * x0
    v = model(cos * x0 + sin * eps, angles, tokens)
    bayes = float((s2 / (cos**2 * s2 + sin**2)).mean())
    assert abs(float((v - target).pow(2).mean()) / bayes - 1) < 0.03
    # The wrong tokens' statistics do much worse: the prior really reads each frame's token.
    wrong = model(cos * x0 + sin * eps, angles, tokens.roll(1, 1))
    assert float((wrong - target).pow(2).mean()) > 3 * bayes


def test_token_prior_refuses_bad_statistics():
    model = _prior_dpd()
    c = model.config
    rows = (c.token_vocab + 1, c.latent_channels)
    with pytest.raises(ValueError, match=r"mean must be \[1025, 16\]"):
        model.set_token_prior(torch.zeros(c.token_vocab, c.latent_channels), torch.ones(rows))
    with pytest.raises(ValueError, match="var holds NaN"):
        model.set_token_prior(torch.zeros(rows), torch.full(rows, float("nan")))
    with pytest.raises(ValueError, match="variances must be > 0"):
        model.set_token_prior(torch.zeros(rows), torch.zeros(rows))
    with pytest.raises(ValueError, match="token_prior false"):
        DualPathDiffusion(c.replace(token_prior=False)).set_token_prior(torch.zeros(rows), torch.ones(rows))
