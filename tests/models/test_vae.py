import copy
import json
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from melody_edge.models.checkpoint import CheckpointError, load_component, save_component
from melody_edge.models.config import ConfigError
from melody_edge.models.discriminators import DiscriminatorConfig, ResolutionDiscriminator, VAEGANDiscriminator
from melody_edge.models.vae import (
    VAE,
    VAE_PRESETS,
    VAEConfig,
    decoder_flops_per_second,
    encoder_flops_per_second,
)
from melody_edge.models.vae_losses import (
    STFT_RESOLUTIONS,
    VAELossWeights,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    generator_loss,
    latent_fast_share,
    multi_resolution_stft_loss,
    reconstruction_loss,
    usable_resolutions,
)

TINY = VAE_PRESETS["tiny"]


def tiny_vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(TINY)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------ chunked decoding and receptive field


@torch.no_grad()
@pytest.mark.parametrize("chunk", [1, 7, 16, 50, 64, 203, 250])
def test_chunked_decoding_equals_whole_decoding(chunk):
    vae = tiny_vae().eval()
    torch.manual_seed(1)
    z = torch.rand(2, 16, 203) * 2 - 1  # 203 is prime: most chunk sizes leave a partial last chunk
    whole = vae.decode(z)
    chunked = vae.decode_chunked(z, chunk)
    assert chunked.shape == whole.shape == (2, 203 * 96)
    assert rel_err(chunked, whole) < 1e-5


@torch.no_grad()
def test_chunked_decoding_is_exact_in_float64():
    # A context one frame short errs by only ~1e-11 of the peak (the outermost taps are weak), far
    # below the float32 tolerance above; float64 makes the check sharp.
    vae = tiny_vae().double().eval()
    torch.manual_seed(1)
    z = torch.rand(1, 16, 80, dtype=torch.float64) * 2 - 1
    whole = vae.decode(z)
    for chunk in (7, 30):
        assert rel_err(vae.decode_chunked(z, chunk), whole) < 1e-13


@torch.no_grad()
def test_decode_chunk_is_a_static_window_of_the_padded_latent():
    vae = tiny_vae().eval()
    r, c = vae.context_frames, 40
    torch.manual_seed(2)
    z = torch.rand(1, 16, 120) * 2 - 1
    whole = vae.decode(z)
    padded = torch.nn.functional.pad(z, (r, r))
    start = 55  # the window's middle frames are latent frames [start, start + c)
    audio = vae.decode_chunk(padded[..., start : start + c + 2 * r])
    assert audio.shape == (1, c * 96)
    assert rel_err(audio, whole[:, start * 96 : (start + c) * 96]) < 1e-5
    with pytest.raises(ValueError, match="context"):
        vae.decode_chunk(torch.zeros(1, 16, 2 * r))


@torch.no_grad()
@pytest.mark.parametrize("preset", ["tiny", "edge"])
def test_context_frames_is_the_exact_reach_of_one_latent_frame(preset):
    torch.manual_seed(0)
    vae = VAE(VAE_PRESETS[preset]).double().eval()  # float64: the weakest influences stay visible
    r = vae.context_frames
    lo, hi, per_frame = vae.decoder.dependency_spans()[-1]
    assert per_frame == 1
    frames, f = 2 * r + 9, r + 4
    z = torch.rand(1, 16, frames, dtype=torch.float64) * 2 - 1
    base = vae.decode(z)
    z[:, :, f] += 0.5
    diff = (vae.decode(z) - base).abs().view(frames, 96).amax(dim=1)
    changed = torch.nonzero(diff > 0).flatten()
    # Output frame g reads latent frames [g + lo, g + hi]: frame f reaches exactly [f - hi, f - lo].
    assert (changed.min().item(), changed.max().item()) == (f - hi, f - lo)
    assert len(changed) == hi - lo + 1
    # R covers the reach and is not padded beyond it.
    assert max(-lo, hi) <= r <= max(-lo, hi) + 1


# ------------------------------------------------------------------ shapes and latents


@torch.no_grad()
def test_shapes_hop_and_latent_range():
    vae = tiny_vae().eval()
    assert (vae.hop_length, vae.latent_rate) == (96, 250)
    assert (TINY.hop_length, TINY.latent_rate) == (96, 250)
    torch.manual_seed(3)
    audio = torch.randn(2, 96 * 40) * 0.5
    mean, logvar = vae.encode(audio)
    assert mean.shape == logvar.shape == (2, 16, 40)
    for sample in (False, True):
        lat = vae.latent(audio * 50, sample=sample, generator=torch.Generator().manual_seed(0))
        assert lat.shape == (2, 16, 40)
        assert lat.abs().max() <= TINY.latent_gain
    a = vae.latent(audio, sample=True, generator=torch.Generator().manual_seed(7))
    b = vae.latent(audio, sample=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, vae.latent(audio))
    g = TINY.latent_gain
    assert torch.allclose(vae.latent(audio), (mean / 3).clamp(-1, 1) * g)
    assert torch.allclose(vae.normalize(torch.tensor([-9.0, 0.3, 4.0])), torch.tensor([-1.0, 0.1, 1.0]) * g)
    out = vae.decode(vae.latent(audio))
    assert out.shape == audio.shape and out.abs().max() <= 1.0
    recon, m, lv = vae(audio, generator=torch.Generator().manual_seed(0))
    assert recon.shape == audio.shape and m.shape == lv.shape == (2, 16, 40)
    with pytest.raises(ValueError, match="multiple of 96"):
        vae.encode(torch.zeros(1, 1000))


@torch.no_grad()
def test_latent_gain_scales_the_dpd_space_and_nothing_else():
    """The gain multiplies the latent and divides the decoder input: same weights, same audio."""
    assert TINY.latent_gain == 3.0 and VAEConfig().latent_gain == 1.0
    torch.manual_seed(3)
    audio = torch.randn(1, 96 * 40) * 0.5
    gained = tiny_vae().eval()
    plain = VAE(TINY.replace(latent_gain=1.0)).eval()
    plain.load_state_dict(gained.state_dict())
    lat = gained.latent(audio)
    assert torch.allclose(lat, plain.latent(audio) * 3.0)
    assert lat.std() > 2.0 * plain.latent(audio).std()
    assert torch.allclose(gained.decode(lat), plain.decode(plain.latent(audio)), atol=1e-6)
    r = gained.context_frames
    window = torch.nn.functional.pad(lat, (r, r))
    assert torch.allclose(gained.decode_chunk(window), plain.decode_chunk(window / 3.0), atol=1e-6)


def test_latent_fast_share_separates_slow_from_fast_structure_and_has_a_gradient():
    t = torch.arange(400, dtype=torch.float32)
    slow = torch.sin(2 * torch.pi * t / 200).expand(2, 16, -1) + 5.0  # a 0.8 s period, and an offset
    assert float(latent_fast_share(slow)) < 1e-3
    alternating = slow - 5.0 + 0.5 * (-1.0) ** t  # every other frame
    share = float(latent_fast_share(alternating))
    assert 0.15 < share < 0.25  # 0.125 of the (0.5 + 0.125) energy, minus what the edges and filter keep
    noise = torch.randn(2, 16, 400, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = latent_fast_share(noise)
    assert 0.7 < float(loss.detach()) < 0.9  # white noise: most of its energy is faster than 5 frames
    loss.backward()
    assert noise.grad is not None and torch.isfinite(noise.grad).all() and noise.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="frames"):
        latent_fast_share(torch.zeros(1, 16, 8))


@torch.no_grad()
def test_latent_smoothing_low_passes_the_mean_only_and_adds_no_weights():
    torch.manual_seed(4)
    audio = torch.randn(2, 96 * 120) * 0.3
    plain = tiny_vae().eval()
    smooth = VAE(TINY.replace(latent_smoothing=9)).eval()
    assert set(smooth.state_dict()) == set(plain.state_dict())  # the window is a function of the config
    smooth.load_state_dict(plain.state_dict())
    (m0, v0), (m1, v1) = plain.encode(audio), smooth.encode(audio)
    assert torch.equal(v0, v1)
    assert torch.allclose(m1, smooth.smooth(m0))
    assert float(latent_fast_share(m1)) < 0.15 * float(latent_fast_share(m0))  # 0.07 against 0.73
    # Replicated edges: a constant latent passes unchanged, first and last frames included.
    const = torch.full((1, 16, 30), 0.7)
    assert torch.allclose(smooth.smooth(const), const)

    # It exports (the encoder is a bundle component), padding mode included.
    class Encode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = smooth

        def forward(self, a):
            return self.vae.encode(a)[0]

    program = torch.export.export(Encode(), (audio[:1],))
    assert torch.allclose(program.module()(audio[:1]), m1[:1], atol=1e-6)


@torch.no_grad()
def test_decode_chunk_exports_with_torch_export():
    vae = tiny_vae().eval()

    class Chunk(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.decode_chunk(z)

    window = torch.rand(1, 16, 25 + 2 * vae.context_frames) * 2 - 1
    program = torch.export.export(Chunk(), (window,))
    assert torch.allclose(program.module()(window), vae.decode_chunk(window), atol=1e-6)


# ------------------------------------------------------------------ training


def test_reconstruction_training_overfits_one_example():
    # A target the architecture can represent exactly (another tiny decoder's output), so a failure
    # points at the training path, not at capacity. 480 samples = 5 latent frames.
    teacher = tiny_vae(seed=0).eval()
    with torch.no_grad():
        target = teacher.decode(torch.rand(1, 16, 5) * 2 - 1)
        target = 0.5 * target / target.abs().max()
    vae = tiny_vae(seed=1)
    opt = torch.optim.Adam(vae.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        recon, mean, logvar = vae(target, sample=True, generator=gen)
        loss, parts = reconstruction_loss(target, recon, mean, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"mrstft", "kl", "total"}
    final = sum(losses[-10:]) / 10
    assert final * 10 <= losses[0], f"loss fell only {losses[0] / final:.1f}x ({losses[0]:.2f} -> {final:.2f})"


def representable_audio(frames: int = 24) -> torch.Tensor:
    """[1, 96 * frames] audio another tiny decoder made, peak 0.5: a target the tiny VAE can reach."""
    teacher = tiny_vae(seed=0).eval()
    with torch.no_grad():
        audio = teacher.decode(torch.rand(1, 16, frames, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    return (0.5 * audio / audio.abs().max()).reshape(1, -1)


def fell_tenfold(losses: list[float]) -> tuple[bool, str]:
    final = sum(losses[-10:]) / 10
    return final * 10 <= losses[0], f"loss fell only {losses[0] / final:.1f}x ({losses[0]:.4f} -> {final:.4f})"


def train_discriminator(real: torch.Tensor, steps: int) -> tuple[VAEGANDiscriminator, list[float]]:
    """A small discriminator trained on ``real`` against one fixed noise clip; returns it and its losses."""
    fake = torch.randn(real.shape, generator=torch.Generator().manual_seed(1)) * 0.1
    torch.manual_seed(2)
    disc = VAEGANDiscriminator(DiscriminatorConfig(width=4))
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.8, 0.99))
    losses = []
    for _ in range(steps):
        loss, _ = discriminator_loss(disc(real)[0], disc(fake)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return disc, losses


@pytest.fixture(scope="module")
def trained_discriminator() -> tuple[VAEGANDiscriminator, list[float]]:
    return train_discriminator(representable_audio(), steps=120)


def test_discriminator_loss_overfits_one_real_fake_pair(trained_discriminator):
    ok, message = fell_tenfold(trained_discriminator[1])
    assert ok, message


@pytest.mark.parametrize("term", ["feature_matching", "adversarial"])
def test_generator_gan_terms_overfit_one_example_against_a_fixed_discriminator(term, trained_discriminator):
    # Each generator-side GAN term alone drives the VAE on one clip against a discriminator that has
    # learnt to tell that clip from noise (an untrained one scores everything alike, so the adversarial
    # term has nothing to climb); it is frozen so the target does not move, as it does in training.
    real = representable_audio()
    disc = copy.deepcopy(trained_discriminator[0]).requires_grad_(False)
    frozen = {k: v.clone() for k, v in disc.state_dict().items()}
    _, real_fmaps = disc(real)
    vae = tiny_vae(seed=1)
    opt = torch.optim.Adam(vae.parameters(), lr=5e-3, betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        fake, _, _ = vae(real, sample=True, generator=gen)
        fake_logits, fake_fmaps = disc(fake.reshape(1, -1))
        if term == "feature_matching":
            loss = feature_matching_loss(real_fmaps, fake_fmaps)
        else:
            loss = generator_adversarial_loss(fake_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.equal(v, frozen[k]) for k, v in disc.state_dict().items())
    ok, message = fell_tenfold(losses)
    assert ok, message


def test_mrstft_resolutions_and_short_audio_rule():
    assert [r[0] for r in STFT_RESOLUTIONS] == [8192, 4096, 2048, 1024, 512, 128, 32]
    assert all(win == n // 2 and hop == n // 4 for n, hop, win in STFT_RESOLUTIONS)
    assert usable_resolutions(4097) == STFT_RESOLUTIONS
    assert [r[0] for r in usable_resolutions(300)] == [512, 128, 32]
    torch.manual_seed(4)
    x = torch.randn(2, 1000)
    assert multi_resolution_stft_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert multi_resolution_stft_loss(0.5 * x, x).item() > 0.5
    with pytest.raises(ValueError, match="shorter than every"):
        multi_resolution_stft_loss(x[:, :16], x[:, :16])


def test_gan_losses_are_finite_and_gradients_flow():
    vae = tiny_vae()
    torch.manual_seed(5)
    disc = VAEGANDiscriminator(DiscriminatorConfig(width=2))
    real = torch.randn(2, 96 * 30) * 0.3
    fake, mean, logvar = vae(real, generator=torch.Generator().manual_seed(0))

    real_logits, real_fmaps = disc(real)
    assert len(real_logits) == len(real_fmaps) == 5 + 3
    assert all(len(f) == 6 for f in real_fmaps)
    fake_logits_d, _ = disc(fake.detach())
    d_loss, d_parts = discriminator_loss(real_logits, fake_logits_d)
    assert torch.isfinite(d_loss) and d_parts["total"] is d_loss
    d_loss.backward()
    d_grads = [p.grad for p in disc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in d_grads)
    assert all(g.abs().sum() > 0 for g in d_grads)
    assert all(p.grad is None for p in vae.parameters())  # fake was detached

    disc.zero_grad()
    fake_logits, fake_fmaps = disc(fake)
    weights = VAELossWeights()
    g_loss, parts = generator_loss(real, fake, mean, logvar, fake_logits, real_fmaps, fake_fmaps, weights)
    assert set(parts) == {"mrstft", "kl", "fm", "adv", "total"}
    assert all(torch.isfinite(v) for v in parts.values())
    expected = 50 * parts["mrstft"] + 20 * parts["fm"] + 1 * parts["adv"] + 0.005 * parts["kl"]
    assert torch.allclose(g_loss, expected)
    g_loss.backward()
    for module in (vae.encoder, vae.decoder):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_resolution_discriminator_rejects_too_short_audio():
    d = ResolutionDiscriminator((2048, 240, 1200), width=2, use_weight_norm=False, slope=0.1)
    with pytest.raises(ValueError, match="too short"):
        d(torch.zeros(1, 500))


# ------------------------------------------------------------------ sizes and compute


def meta_vae(config: VAEConfig) -> VAE:
    with torch.device("meta"):
        return VAE(config)


def test_paper_preset_matches_published_sizes():
    vae = meta_vae(VAE_PRESETS["paper"])
    enc = sum(p.numel() for p in vae.encoder.parameters())
    dec = sum(p.numel() for p in vae.decoder.parameters())
    assert abs(enc / 40.0e6 - 1) <= 0.05, enc
    assert abs(dec / 60.1e6 - 1) <= 0.05, dec
    paper = VAE_PRESETS["paper"]
    assert (paper.dec_channels, paper.dec_rates, paper.dec_kernels) == ((768, 384, 192, 96), (4, 4, 3, 2), (9, 9, 5, 7))
    assert (paper.enc_rates, paper.enc_kernels) == ((2, 3, 4, 4), (5, 7, 9, 9))
    assert 15e9 <= decoder_flops_per_second(VAE_PRESETS["edge"]) <= 25e9


@pytest.mark.parametrize("preset", sorted(VAE_PRESETS))
def test_analytic_flops_match_the_flop_counter(preset):
    config = VAE_PRESETS[preset]
    vae = meta_vae(config)
    with torch.device("meta"):
        z = torch.zeros(1, config.latent_channels, config.latent_rate)  # one second
        audio = torch.zeros(1, 1, config.sample_rate)
    with FlopCounterMode(display=False) as dec_counter:
        vae.decoder(z)
    with FlopCounterMode(display=False) as enc_counter:
        vae.encoder(audio)
    assert dec_counter.get_total_flops() == decoder_flops_per_second(config)
    assert enc_counter.get_total_flops() == encoder_flops_per_second(config)


# ------------------------------------------------------------------ configs and checkpoints


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dec_rates": (4, 4, 3, 3)}, "dec_rates"),
        ({"enc_channels": (8, -16, 16, 32)}, "enc_channels[1]"),
        ({"dec_channels": (32, 16, 0, 8)}, "dec_channels[2]"),
        ({"enc_kernels": (5, 7, 9)}, "enc_kernels"),
        ({"dec_kernels": (3, 9, 5, 7)}, "dec_kernels[0]"),
        ({"dec_res_kernels": (4,)}, "dec_res_kernels[0]"),
        ({"enc_res_dilations": ()}, "enc_res_dilations"),
        ({"sample_rate": 24001}, "sample_rate"),
        ({"latent_scale": 0.0}, "latent_scale"),
        ({"latent_gain": float("nan")}, "latent_gain"),
        ({"latent_gain": -1.0}, "latent_gain"),
        ({"latent_channels": 0}, "latent_channels"),
        ({"latent_smoothing": 4}, "latent_smoothing"),
        ({"latent_smoothing": 1}, "latent_smoothing"),
        ({"latent_smoothing": -3}, "latent_smoothing"),
    ],
)
def test_bad_vae_config_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=rf"^{re.escape(field)}:"):
        TINY.replace(**changes)


def test_other_configs_validate_and_round_trip_through_json():
    with pytest.raises(ConfigError, match=r"^width:"):
        DiscriminatorConfig(width=0)
    with pytest.raises(ConfigError, match=r"^resolutions\[1\]:"):
        DiscriminatorConfig(resolutions=((512, 50, 240), (512, 50, 1024)))
    with pytest.raises(ConfigError, match=r"^kl:"):
        VAELossWeights(kl=-1.0)
    with pytest.raises(ConfigError, match=r"dec_channels\[1\]"):
        VAEConfig.from_dict({"dec_channels": [32, "16", 16, 8]})
    for config in (*VAE_PRESETS.values(), DiscriminatorConfig(), VAELossWeights()):
        assert type(config).from_dict(json.loads(config.to_json())) == config


def test_checkpoint_round_trip_is_bit_exact_and_mismatch_names_the_tensor(tmp_path):
    vae = tiny_vae(seed=3).eval()
    save_component(tmp_path / "vae", TINY, vae)
    config, loaded = load_component(tmp_path / "vae", VAEConfig, VAE)
    assert config == TINY
    state, loaded_state = vae.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    z = torch.rand(1, 16, 30) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae.decode(z), loaded.decode(z))

    # Weights of the tiny model under a config whose first down-sampling kernel differs.
    TINY.replace(enc_kernels=(7, 7, 9, 9)).save(tmp_path / "vae" / "config.json")
    with pytest.raises(CheckpointError, match=r"encoder\.downs\.0\.weight"):
        load_component(tmp_path / "vae", VAEConfig, VAE)
