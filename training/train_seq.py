"""``melody-edge train dpd`` and ``train lm``: the two networks trained on cached features.

DPD: windows of VAE latents with the semantic tokens of the same span; velocity loss with one angle
per chunk, 10 % condition dropout, and (``future_null_prob``) the progressive first window the
streaming pipeline uses; with ``chroma_weight``, plus the chroma loss of its decoded clean-latent
estimate against the real audio (:mod:`.chroma_loss`). LM: the caption's 12 prefix codes followed by a
window of semantic tokens.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from melody_edge.models.dpd import DPDConfig, DualPathDiffusion, dpd_loss_terms
from melody_edge.models.lm import LMConfig, SemanticLM
from melody_edge.models.vae import VAE

from .chroma_loss import chroma_distance, crop_starts, decoded_chroma_loss
from .lm_prefix import CodewordPrefix, prefix_lm_losses
from .loop import Runtime, TrainOptions, clip_and_step
from .metrics import dpd_loss_by_angle, dpd_token_use


class _PrefixLoss(nn.Module):
    """[CE, first_ce, bag_ce] with prefix rows from a :class:`CodewordPrefix` (or the LM's own); both modules inside,
    for DDP."""

    def __init__(self, model: SemanticLM, prefix: CodewordPrefix | None) -> None:
        super().__init__()
        self.model, self.prefix = model, prefix

    def forward(self, prefix_codes: Tensor, semantic: Tensor) -> Tensor:
        return prefix_lm_losses(self.model, self.prefix, prefix_codes, semantic)


def _adamw(module: nn.Module, lr: float) -> torch.optim.AdamW:
    decay = [p for n, p in module.named_parameters() if p.dim() >= 2]
    other = [p for n, p in module.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def window_starts(lengths: list[int], window: int) -> list[tuple[int, int]]:
    """(clip, start token) of every window that fits, stepping by half a window."""
    out = []
    for i, n in enumerate(lengths):
        out += [(i, s) for s in range(0, max(n - window, 0) + 1, max(window // 2, 1)) if s + window <= n]
    return out


@dataclasses.dataclass(frozen=True)
class DPDTrainSettings:
    future_null_prob: float = 0.25
    val_windows: int = 8
    angle_bins: int = 4
    # Weight of the decoded chroma loss (training/chroma_loss.py; 0 = velocity MSE alone). Needs the VAE and
    # the training audio. 1 took the key rendered from real held-out tokens from 17 % to 26-29 % in 200-500
    # fine-tuning steps of the demo DPD (docs/model_card.md).
    chroma_weight: float = 0.0
    chroma_crop_seconds: float = 2.0  # one crop per window, inside a conditioned chunk
    chroma_val_angle: float = 1.2  # validation decodes the estimate from this noise level (pi/2 = pure noise)

    def __post_init__(self) -> None:
        if not (0.0 <= self.chroma_weight < math.inf):
            raise ValueError(f"--chroma-weight must be >= 0, got {self.chroma_weight}")
        if not self.chroma_crop_seconds > 0:
            raise ValueError(f"chroma_crop_seconds must be > 0, got {self.chroma_crop_seconds}")


class _DPDLoss(nn.Module):
    """Velocity MSE (+ the weighted decoded chroma loss) in one forward, for DDP: the DPD and, when the
    chroma loss is on, the frozen VAE whose decoder renders the estimate."""

    def __init__(self, model: DualPathDiffusion, vae: VAE | None, settings: DPDTrainSettings) -> None:
        super().__init__()
        self.model, self.vae, self.settings = model, vae, settings
        if vae is not None:
            # The crop stays inside one chunk: one noise level, and all of it saw its real tokens.
            crop = max(1, round(settings.chroma_crop_seconds * vae.latent_rate))
            self.crop_frames = min(crop, model.config.chunk_frames)

    def forward(
        self, z0: Tensor, tokens: Tensor, audio: Tensor | None, generator: torch.Generator, future_null_prob: float
    ) -> tuple[Tensor, dict[str, Tensor]]:
        terms = dpd_loss_terms(self.model, z0, tokens, generator=generator, future_null_prob=future_null_prob)
        if self.vae is None or audio is None:
            return terms.loss, {"loss": terms.loss}
        c = self.model.config
        starts = crop_starts(terms.conditioned, c.chunk_frames, self.crop_frames, generator)
        vc = self.vae.config
        chroma = decoded_chroma_loss(
            self.vae.decode, terms.x0, audio, starts, self.crop_frames, vc.hop_length, vc.sample_rate
        )
        total = terms.loss + self.settings.chroma_weight * chroma
        return total, {"loss": total, "mse": terms.loss, "chroma": chroma}


class DPDTask:
    name = "dpd"
    validation_inputs: str | None = None

    def __init__(
        self,
        config: DPDConfig,
        train: tuple[list[Tensor], list[Tensor]],
        validation: tuple[list[Tensor], list[Tensor]],
        options: TrainOptions,
        settings: DPDTrainSettings,
        runtime: Runtime,
        vae: VAE | None = None,
        audio: tuple[list[Tensor], list[Tensor]] | None = None,
    ) -> None:
        """``vae`` and ``audio`` (the training and validation clips the latents were encoded from, [N_i]
        each) are needed when ``settings.chroma_weight`` > 0."""
        self.config, self.options, self.settings, self.rt = config, options, settings, runtime
        torch.manual_seed(options.seed)
        self.module = DualPathDiffusion(config).to(runtime.device)
        self.extra_modules: dict[str, nn.Module] = {}
        self.vae = None
        if settings.chroma_weight > 0:
            if vae is None or audio is None:
                raise ValueError("the chroma loss (chroma_weight > 0) needs the VAE and the training audio")
            self.vae = vae.to(runtime.device).eval()
            for p in self.vae.parameters():
                p.requires_grad_(False)
            self.train_audio, val_audio = audio
            self.primary_metric = "objective"  # what best/ keeps: the velocity MSE alone would undo the chroma term
        self.losses = _DPDLoss(self.module, self.vae, settings)
        self.loss = runtime.wrap(self.losses)
        self.train_latents, self.train_tokens = train
        self.windows = window_starts([t.numel() for t in self.train_tokens], config.window_tokens)
        if not self.windows:
            raise ValueError(
                f"no training clip holds a full DPD window of {config.window_tokens} tokens "
                f"({config.window_frames} latent frames); build the data set with longer --clip-seconds"
            )
        val = window_starts([t.numel() for t in validation[1]], config.window_tokens)[: settings.val_windows]
        if not val:
            raise ValueError("no validation clip holds a full DPD window; build the data set with longer clips")
        self.val_z, self.val_tokens = self._batch(validation, val)
        if self.vae is not None:
            self.val_audio = self._window_audio(val_audio, val)

    def _window_audio(self, audio: list[Tensor], picks: list[tuple[int, int]]) -> Tensor:
        """[B, window_frames * hop]: the audio each picked latent window was encoded from (zero-padded)."""
        c, hop = self.config, self.vae.hop_length
        n = c.window_frames * hop
        out = torch.zeros(len(picks), n)
        for row, (i, s) in enumerate(picks):
            piece = audio[i][s * c.frames_per_token * hop :][:n]
            out[row, : piece.numel()] = piece
        return out.to(self.rt.device)

    def _batch(self, data: tuple[list[Tensor], list[Tensor]], picks: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        c = self.config
        z = torch.stack(
            [data[0][i][:, s * c.frames_per_token : s * c.frames_per_token + c.window_frames] for i, s in picks]
        )
        tok = torch.stack([data[1][i][s : s + c.window_tokens] for i, s in picks])
        return z.to(self.rt.device), tok.to(self.rt.device)

    def on_new_run(self, missing: list[str] | None, log) -> None:
        """With a token prior, start as the prior's closed-form velocity: training then learns only what the
        prior misses. Applies to a fresh network (``missing`` None) and to an ``--init-from`` source trained
        without the prior, whose read-out predicted the whole velocity and would count the prior twice; its
        learned blocks are kept."""
        if not self.config.token_prior or (missing is not None and "prior_proj.weight" not in missing):
            return
        with torch.no_grad():
            for layer in (self.module.out_proj, self.module.prior_proj):
                layer.weight.zero_()
                layer.bias.zero_()
        log("[dpd] output and prior projections set to zero: the network starts as the token prior's velocity")

    def optimizers(self, options: TrainOptions) -> dict[str, torch.optim.Optimizer]:
        return {"dpd": _adamw(self.module, options.lr)}

    def attach(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.opt = optimizers["dpd"]

    def train_step(self, step: int, gen: torch.Generator) -> dict[str, float]:
        picks = [
            self.windows[int(i)] for i in torch.randint(len(self.windows), (self.options.batch_size,), generator=gen)
        ]
        z0, tokens = self._batch((self.train_latents, self.train_tokens), picks)
        audio = self._window_audio(self.train_audio, picks) if self.vae is not None else None
        loss, parts = self.loss(z0, tokens, audio, gen, self.settings.future_null_prob)
        loss.backward()
        clip_and_step(self.module, self.opt, self.options.grad_clip)
        return {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.module.eval()
        out = dpd_loss_by_angle(self.module, self.val_z, self.val_tokens, self.settings.angle_bins)
        # Whether the DPD reads its tokens yet: how much lower its error near pure noise is with the
        # real tokens than with null ones (relative to a variance-only estimate; 0 = tokens unused).
        use = dpd_token_use(self.module, self.val_z, self.val_tokens)
        out["token_gain"] = use["null_tokens_relative_mse"] - use["real_tokens_relative_mse"]
        if self.vae is not None:
            out["chroma"] = self._validation_chroma()
            out["objective"] = out["mean"] + self.settings.chroma_weight * out["chroma"]
        self.module.train()
        return out

    def _validation_chroma(self) -> float:
        """Mean chroma distance of the decoded clean-latent estimate at ``chroma_val_angle`` (seeded noise,
        real tokens) from the real audio, over a fixed crop in the middle of each validation window."""
        c, s = self.config, self.settings
        z0 = self.val_z
        gen = torch.Generator(device=z0.device).manual_seed(0)
        noise = torch.randn(z0.shape, generator=gen, device=z0.device)
        angles = torch.full((z0.shape[0], c.window_frames), s.chroma_val_angle, device=z0.device)
        cos, sin = math.cos(s.chroma_val_angle), math.sin(s.chroma_val_angle)
        z = cos * z0 + sin * noise
        x0 = cos * z - sin * self.module(z, angles, self.val_tokens)
        crop = self.losses.crop_frames  # the training crop's length, here in the middle of the window
        start = (c.window_frames - crop) // 2
        hop = self.vae.hop_length
        fake = self.vae.decode(x0[..., start : start + crop])
        real = self.val_audio[:, start * hop : (start + crop) * hop]
        return float(chroma_distance(fake, real, self.vae.config.sample_rate).mean())


@dataclasses.dataclass(frozen=True)
class LMTrainSettings:
    val_batch: int = 32
    # Prefix rows as a learned map of the conditioner's codewords (training/lm_prefix.py); needs the
    # conditioner's codebooks. Off: one free row per code, as the LM stores them.
    codeword_prefix: bool = True
    # Weight of the prompt-only prediction scored against its whole window (lm_prefix.first_token_window_ce);
    # without it the demo LM ignored its prompt (validation CE equal with another clip's prefix).
    window_weight: float = 0.5
    # Weight of every position's prediction scored against its whole window (lm_prefix.window_bag_ce):
    # keeps sampled windows in the key they start in. 0 = off (the LMs trained before 2026-12-06).
    bag_weight: float = 0.0
    # Share of training windows whose prompt is replaced by the generic prompt's codes (``null_codes``,
    # ``conditioning.GENERIC_PROMPT``): what classifier-free guidance on the LM needs as its unconditional
    # branch. Per config in pipeline.LM_SETTINGS (demo 0.2); `train lm --prompt-dropout` overrides it, and the
    # assembled checkpoint then guides its LM (run_dir.DEFAULT_LM_GUIDANCE).
    prompt_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError(f"--prompt-dropout must be in [0, 1), got {self.prompt_dropout}")
        if not 0.0 <= self.bag_weight <= 10.0:
            raise ValueError(f"the LM's bag_weight must be in [0, 10], got {self.bag_weight}")


class LMTask:
    name = "lm"
    validation_inputs: str | None = None

    def __init__(
        self,
        config: LMConfig,
        train: tuple[Tensor, list[Tensor]],
        validation: tuple[Tensor, list[Tensor]],
        options: TrainOptions,
        settings: LMTrainSettings,  # train codes [N, V, levels] (phrasings), validation codes [N, levels]
        runtime: Runtime,
        codebooks: Tensor | None = None,  # the conditioner's RVQ [levels, codebook_size, D]
        null_codes: Tensor | None = None,  # [levels]: the generic prompt's codes (prompt dropout)
    ) -> None:
        self.config, self.options, self.settings, self.rt = config, options, settings, runtime
        if settings.prompt_dropout and null_codes is None:
            raise ValueError("prompt_dropout needs the generic prompt's codes (null_codes)")
        self.null_codes = null_codes
        torch.manual_seed(options.seed)
        self.module = SemanticLM(config).to(runtime.device)
        self.extra_modules: dict[str, nn.Module] = {}
        self.prefix: CodewordPrefix | None = None
        if settings.codeword_prefix:
            if codebooks is None:
                raise ValueError("codeword_prefix needs the conditioner's RVQ codebooks (or set it off)")
            self.prefix = CodewordPrefix(codebooks, config.dim).to(runtime.device)
            self.prefix.check_fits(self.module)
            self.extra_modules["prefix"] = self.prefix
        self.loss = runtime.wrap(_PrefixLoss(self.module, self.prefix))
        self.seq = config.max_seq_len - config.prefix_levels
        self.train_codes, self.train_tokens = train
        short = min(t.numel() for t in self.train_tokens)
        if short < 2:
            raise ValueError("training clips must hold at least 2 semantic tokens (80 ms)")
        self.seq = min(self.seq, short)
        self.val_codes, self.val_tokens = validation

    def on_new_run(self, missing: list[str] | None, log) -> None:
        """Start the prefix map as the least-squares fit to the LM's prefix rows (fresh or ``--init-from``)."""
        if self.prefix is not None:
            self.prefix.fit_to(self.module)
            self.prefix.sync(self.module)
            log("[lm] prefix rows computed from the conditioner's codewords (a linear map fitted to the LM's rows)")

    def optimizers(self, options: TrainOptions) -> dict[str, torch.optim.Optimizer]:
        opts = {"lm": _adamw(self.module, options.lr)}
        if self.prefix is not None:
            opts["prefix"] = _adamw(self.prefix, options.lr)
        return opts

    def attach(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.opt = optimizers["lm"]
        self.prefix_opt = optimizers.get("prefix")

    def train_step(self, step: int, gen: torch.Generator) -> dict[str, float]:
        idx = torch.randint(len(self.train_tokens), (self.options.batch_size,), generator=gen)
        seqs = []
        for i in idx.tolist():
            t = self.train_tokens[i]
            s = int(torch.randint(t.numel() - self.seq + 1, (1,), generator=gen))
            seqs.append(t[s : s + self.seq])
        dev = self.rt.device
        # A random phrasing of each clip's caption per step ([N, V, levels] codes).
        pick = torch.randint(self.train_codes.shape[1], (len(idx),), generator=gen)
        codes = self.train_codes[idx, pick]
        if self.settings.prompt_dropout:
            dropped = torch.rand(len(idx), generator=gen) < self.settings.prompt_dropout
            codes = torch.where(dropped[:, None], self.null_codes.view(1, -1).to(codes), codes)
        codes, tokens = codes.to(dev), torch.stack(seqs).to(dev)
        ce, first, bag = self.loss(codes, tokens)
        loss = ce + self.settings.window_weight * first
        if self.settings.bag_weight:
            loss = loss + self.settings.bag_weight * bag
        loss.backward()
        clip_and_step(self.module, self.opt, self.options.grad_clip)
        if self.prefix is not None:
            clip_and_step(self.prefix, self.prefix_opt, self.options.grad_clip)
            self.prefix.sync(self.module)
        return {"ce": float(ce.detach()), "first_ce": float(first.detach()), "bag_ce": float(bag.detach())}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Cross-entropy over every validation clip's first window (nats per token), with its own prefix and
        with the next clip's (``ce_other_prefix``): equal figures mean the LM ignores its prompt. ``bag_ce``:
        :func:`~.lm_prefix.window_bag_ce` with the own prefix."""
        if self.prefix is not None:
            self.prefix.sync(self.module)  # after a resume the map, not the saved rows, is current
        self.module.eval()
        keep = [t.numel() >= self.seq for t in self.val_tokens]
        tokens = torch.stack([t[: self.seq] for t, k in zip(self.val_tokens, keep) if k]) if any(keep) else None
        out = {"ce": math.nan, "ce_other_prefix": math.nan, "first_ce": math.nan, "first_ce_other_prefix": math.nan}
        out["bag_ce"] = math.nan
        if tokens is not None:
            codes = self.val_codes[torch.tensor(keep)]
            for suffix, c in (("", codes), ("_other_prefix", codes.roll(1, dims=0))):
                totals = [0.0, 0.0, 0.0]
                for i in range(0, len(tokens), self.settings.val_batch):
                    sl = slice(i, i + self.settings.val_batch)
                    # The LM's own (synced) prefix rows: what is saved and exported.
                    losses = prefix_lm_losses(
                        self.module, None, c[sl].to(self.rt.device), tokens[sl].to(self.rt.device)
                    )
                    for k in range(3):
                        totals[k] += float(losses[k]) * len(tokens[sl])
                out["ce" + suffix], out["first_ce" + suffix] = totals[0] / len(tokens), totals[1] / len(tokens)
                if not suffix:
                    out["bag_ce"] = totals[2] / len(tokens)
        self.module.train()
        return out
