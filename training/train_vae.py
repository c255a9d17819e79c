"""``melody-edge train vae``: the VAE-GAN with the paper's losses.

Warm-up: for the first ``disc_start`` steps the generator trains on the reconstruction loss alone
(MR-STFT + KL); then the multi-period and multi-resolution discriminators switch on with the full
generator loss (50 MR-STFT + 20 FM + 1 LS-GAN + 0.005 KL). A GAN from step 0 on CPU budgets spends
its few steps fighting a discriminator that has not learnt anything yet.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from melody_edge.models.discriminators import DiscriminatorConfig, VAEGANDiscriminator
from melody_edge.models.vae import VAE, VAEConfig
from melody_edge.models.vae_losses import discriminator_loss, generator_loss, latent_fast_share, reconstruction_loss

from .data import AudioSet
from .loop import Runtime, TrainOptions, clip_and_step
from .metrics import mel_snr_db, multires_log_mel_distance


@dataclasses.dataclass(frozen=True)
class VAETrainSettings:
    crop_seconds: float = 0.5
    disc_width: int = 8
    disc_start: int = 200
    val_clips: int = 16
    val_seconds: float = 2.0


def _split(x: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:b], x[b:]


class VAETask:
    name = "vae"
    validation_inputs: str | None = None

    def __init__(
        self,
        config: VAEConfig,
        train: AudioSet,
        validation: AudioSet,
        options: TrainOptions,
        settings: VAETrainSettings,
        runtime: Runtime,
    ) -> None:
        self.config, self.options, self.settings, self.rt = config, options, settings, runtime
        torch.manual_seed(options.seed)
        self.module = VAE(config).to(runtime.device)
        self.disc = VAEGANDiscriminator(DiscriminatorConfig(width=settings.disc_width)).to(runtime.device)
        self.extra_modules: dict[str, nn.Module] = {"discriminator": self.disc}
        self.g = runtime.wrap(self.module)
        self.d = runtime.wrap(self.disc)
        hop = config.hop_length
        self.crop = max(hop, round(settings.crop_seconds * config.sample_rate) // hop * hop)
        self.train_set = train
        val_len = round(settings.val_seconds * config.sample_rate) // hop * hop
        self.val_audio = validation.fixed_crops(settings.val_clips, val_len, multiple=hop)

    def optimizers(self, options: TrainOptions) -> dict[str, torch.optim.Optimizer]:
        # HiFi-GAN's AdamW betas (0.8, 0.99).
        return {
            "generator": torch.optim.AdamW(self.module.parameters(), lr=options.lr, betas=(0.8, 0.99)),
            "discriminator": torch.optim.AdamW(self.disc.parameters(), lr=options.lr, betas=(0.8, 0.99)),
        }

    def attach(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.opt = optimizers

    def train_step(self, step: int, gen: torch.Generator) -> dict[str, float]:
        dev = self.rt.device
        audio = self.train_set.random_crops(self.options.batch_size, self.crop, gen, self.config.hop_length).to(dev)
        sample_gen = gen if dev.type == "cpu" else None
        fake, mean, logvar = self.g(audio, sample=True, generator=sample_gen)
        opt_g, opt_d = self.opt["generator"], self.opt["discriminator"]
        if step < self.settings.disc_start:
            loss, parts = reconstruction_loss(audio, fake, mean, logvar)
            loss.backward()
            clip_and_step(self.module, opt_g, self.options.grad_clip)
            return {k: float(v.detach()) for k, v in parts.items()}
        b = audio.shape[0]
        # Discriminator: one forward over real and detached fake (DDP needs one forward per backward).
        logits, _ = self.d(torch.cat([audio, fake.detach()]))
        d_loss, _ = discriminator_loss([_split(x, b)[0] for x in logits], [_split(x, b)[1] for x in logits])
        d_loss.backward()
        clip_and_step(self.disc, opt_d, self.options.grad_clip)
        # Generator: the unwrapped discriminator, so its gradients are neither reduced nor kept.
        logits, fmaps = self.disc(torch.cat([audio, fake]))
        real_fm = [[_split(f, b)[0].detach() for f in group] for group in fmaps]
        fake_fm = [[_split(f, b)[1] for f in group] for group in fmaps]
        g_loss, parts = generator_loss(audio, fake, mean, logvar, [_split(x, b)[1] for x in logits], real_fm, fake_fm)
        g_loss.backward()
        clip_and_step(self.module, opt_g, self.options.grad_clip)
        opt_d.zero_grad(set_to_none=True)
        return {**{k: float(v.detach()) for k, v in parts.items()}, "disc": float(d_loss.detach())}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.module.eval()
        audio = self.val_audio.to(self.rt.device)
        fake, mean, logvar = self.module(audio, sample=False)
        _, parts = reconstruction_loss(audio, fake, mean, logvar)
        sr = self.config.sample_rate
        out = {
            "mrstft": float(parts["mrstft"]),
            "kl": float(parts["kl"]),
            "log_mel_l1": multires_log_mel_distance(audio, fake, sr),
            "mel_snr_db": mel_snr_db(audio, fake, sr),
            # Energy share of structure faster than 5 frames: what a per-token signal cannot carry.
            "fast_share": float(latent_fast_share(mean)),
        }
        self.module.train()
        return out
