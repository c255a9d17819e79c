"""The whole MeLoDy model: its five components, one validated config, and the combined checkpoint.

A combined checkpoint is a directory::

    melody.json                  # MelodyConfig: name, sampling defaults, every component's config
    lm/config.json, lm/model.safetensors
    dpd/..., vae/..., conditioner/..., tokenizer/...

Loading validates each component's weights against its config and the components against each
other (latent channels, token vocabulary, rates, window sizes), naming any mismatch.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, load_component, read_json, save_component
from .conditioning import CONDITIONER_PRESETS, ConditionerConfig, PromptConditioner
from .config import ConfigBase, ConfigError, require
from .dpd import DPD_PRESETS, DPDConfig, DualPathDiffusion
from .lm import LM_PRESETS, LMConfig, SemanticLM
from .lm_guidance import streaming_lm
from .semantic_tokenizer import TOKENIZER_PRESETS
from .tokenizers import TokenizerConfig, build_tokenizer, load_tokenizer_component
from .vae import VAE, VAE_PRESETS, VAEConfig

MELODY_FILE = "melody.json"
COMPONENTS = ("lm", "dpd", "vae", "conditioner", "tokenizer")


@dataclasses.dataclass(frozen=True)
class MelodyConfig(ConfigBase):
    name: str
    lm: LMConfig
    dpd: DPDConfig
    vae: VAEConfig
    conditioner: ConditionerConfig
    tokenizer: TokenizerConfig
    steps: int = 8
    guidance_scale: float = 2.5
    temperature: float = 1.0
    top_k: int = 0
    # Classifier-free guidance on the LM (1 = off) against the generic prompt's codes, which an LM
    # trained with ``train lm --prompt-dropout`` knows (models/lm_guidance.py).
    lm_guidance_scale: float = 1.0
    lm_null_codes: tuple[int, ...] = ()

    def validate(self) -> None:
        require(bool(self.name), "name", "must be a non-empty string")
        require(self.steps >= 1, "steps", "must be >= 1 (the sampler needs at least one step)")
        require(self.guidance_scale >= 0, "guidance_scale", "must be >= 0 (1.0 disables guidance)")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.lm_guidance_scale >= 0, "lm_guidance_scale", "must be >= 0 (1.0 disables guidance)")
        if self.lm_null_codes:
            require(
                len(self.lm_null_codes) == self.lm.prefix_levels
                and all(0 <= c < self.lm.prefix_codebook_size for c in self.lm_null_codes),
                "lm_null_codes",
                f"must be {self.lm.prefix_levels} codes in [0, {self.lm.prefix_codebook_size}) (the generic prompt's)",
            )
        require(
            self.lm_guidance_scale == 1.0 or bool(self.lm_null_codes),
            "lm_guidance_scale",
            "needs lm_null_codes (an LM trained with --prompt-dropout); set it to 1.0",
        )
        require(0 <= self.top_k <= self.lm.vocab_size, "top_k", f"must be in [0, {self.lm.vocab_size}] (0 = off)")
        lm, dpd, vae = self.lm, self.dpd, self.vae
        require(
            dpd.latent_channels == vae.latent_channels,
            "dpd.latent_channels",
            f"{dpd.latent_channels} differs from vae.latent_channels {vae.latent_channels}",
        )
        require(
            dpd.token_vocab == lm.vocab_size,
            "dpd.token_vocab",
            f"{dpd.token_vocab} differs from lm.vocab_size {lm.vocab_size}",
        )
        require(
            self.tokenizer.vocab_size == lm.vocab_size,
            "tokenizer.vocab_size",
            f"{self.tokenizer.vocab_size} differs from lm.vocab_size {lm.vocab_size}",
        )
        require(
            lm.max_seq_len >= lm.prefix_levels + dpd.window_tokens,
            "lm.max_seq_len",
            f"must hold the prefix and one window: >= {lm.prefix_levels} + {dpd.window_tokens}",
        )
        require(
            self.conditioner.levels == lm.prefix_levels,
            "conditioner.levels",
            f"{self.conditioner.levels} differs from lm.prefix_levels {lm.prefix_levels}",
        )
        require(
            self.conditioner.codebook_size == lm.prefix_codebook_size,
            "conditioner.codebook_size",
            f"{self.conditioner.codebook_size} differs from lm.prefix_codebook_size {lm.prefix_codebook_size}",
        )
        require(
            self.tokenizer.sample_rate == vae.sample_rate,
            "tokenizer.sample_rate",
            f"{self.tokenizer.sample_rate} differs from vae.sample_rate {vae.sample_rate}",
        )
        require(
            dpd.token_feature_dim in (0, self.tokenizer.feature_dim),
            "dpd.token_feature_dim",
            f"{dpd.token_feature_dim} must be 0 or the tokenizer's feature size {self.tokenizer.feature_dim} "
            "(the DPD embeds tokens from the tokenizer's centroids)",
        )
        require(
            math.isclose(self.tokenizer.token_rate * dpd.frames_per_token, self.latent_rate),
            "dpd.frames_per_token",
            f"latent rate {self.latent_rate} Hz / frames_per_token must equal the token rate "
            f"{self.tokenizer.token_rate} Hz",
        )

    @property
    def sample_rate(self) -> int:
        return self.vae.sample_rate

    @property
    def hop_length(self) -> int:
        return self.vae.hop_length

    @property
    def latent_rate(self) -> float:
        return self.vae.sample_rate / self.vae.hop_length

    @property
    def token_rate(self) -> float:
        return self.latent_rate / self.dpd.frames_per_token

    @property
    def chunk_seconds(self) -> float:
        return self.dpd.chunk_frames / self.latent_rate

    @property
    def window_seconds(self) -> float:
        return self.dpd.window_frames / self.latent_rate


def preset(name: str) -> MelodyConfig:
    """A built-in config: ``tiny`` (tests), ``demo`` (the trained demo), ``edge`` (on-device flagship) or ``paper``."""
    if name not in PRESET_STEPS:
        raise ConfigError(f"config: unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return MelodyConfig(
        name=name,
        lm=LM_PRESETS[name],
        dpd=DPD_PRESETS[name],
        vae=VAE_PRESETS[name],
        conditioner=CONDITIONER_PRESETS[name],
        tokenizer=TOKENIZER_PRESETS[name],
        steps=PRESET_STEPS[name],
    )


def with_tokenizer(config: MelodyConfig, tokenizer: TokenizerConfig) -> MelodyConfig:
    """``config`` with another semantic tokenizer; a DPD that embeds token features gets the new width."""
    dpd = config.dpd
    if dpd.token_feature_dim:
        dpd = dataclasses.replace(dpd, token_feature_dim=tokenizer.feature_dim)
    return dataclasses.replace(config, tokenizer=tokenizer, dpd=dpd)


# Few-step defaults: the paper reports T = 5..20; on-device configs favour the low end.
PRESET_STEPS = {"tiny": 4, "demo": 5, "edge": 5, "paper": 10}
PRESET_NAMES = tuple(PRESET_STEPS)


class MeLoDy(nn.Module):
    """Container of the five components; see the module docstring for the checkpoint layout."""

    def __init__(self, config: MelodyConfig) -> None:
        super().__init__()
        self.config = config
        self.lm = SemanticLM(config.lm)
        self.dpd = DualPathDiffusion(config.dpd)
        self.vae = VAE(config.vae)
        self.conditioner = PromptConditioner(config.conditioner)
        self.tokenizer = build_tokenizer(config.tokenizer)
        if config.dpd.token_feature_dim:
            self.dpd.set_token_features(self.tokenizer.centroids)

    def component_configs(self) -> dict[str, ConfigBase]:
        c = self.config
        return {"lm": c.lm, "dpd": c.dpd, "vae": c.vae, "conditioner": c.conditioner, "tokenizer": c.tokenizer}

    def streaming_lm(self, lm_guidance: float | None = None) -> SemanticLM:
        """The LM the runtime and the exports stream with: guided unless the scale is 1.

        ``lm_guidance`` None: the config's ``lm_guidance_scale``.
        """
        c = self.config
        return streaming_lm(self.lm, c.lm_null_codes, lm_guidance, c.lm_guidance_scale)

    def save(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, cfg in self.component_configs().items():
            save_component(directory / name, cfg, getattr(self, name), dtype=dtype)
        self.config.save(directory / MELODY_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> MeLoDy:
        directory = Path(directory)
        if not (directory / MELODY_FILE).is_file():
            raise CheckpointError(
                f"{directory}: no {MELODY_FILE}; a combined checkpoint is a directory written by "
                "`MeLoDy.save` (melody.json + lm/ dpd/ vae/ conditioner/ tokenizer/)"
            )
        raw = read_json(directory / MELODY_FILE)
        try:
            config = MelodyConfig.from_dict(raw, where=str(directory / MELODY_FILE))
        except ConfigError as exc:
            raise CheckpointError(f"{directory / MELODY_FILE}: invalid config: {exc}") from exc
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.config = config
        builders = {
            "lm": (LMConfig, SemanticLM),
            "dpd": (DPDConfig, DualPathDiffusion),
            "vae": (VAEConfig, VAE),
            "conditioner": (ConditionerConfig, PromptConditioner),
        }
        for name in COMPONENTS:
            if name == "tokenizer":
                comp_cfg, module = load_tokenizer_component(directory / name)
            else:
                comp_cfg, module = load_component(directory / name, *builders[name])
            if comp_cfg != getattr(config, name):
                raise CheckpointError(
                    f"{directory / name / 'config.json'} differs from the '{name}' section of "
                    f"{directory / MELODY_FILE}; the checkpoint was assembled from different models"
                )
            setattr(model, name, module)
        check_token_features(model, directory)
        return model.eval()


def check_token_features(model: MeLoDy, directory: Path) -> None:
    """A DPD that embeds tokens from centroids must hold this checkpoint's tokenizer's centroids."""
    if not model.config.dpd.token_feature_dim:
        return
    vocab = model.config.dpd.token_vocab
    stored = model.dpd.token_features[:vocab]
    # Both are saved in the checkpoint's dtype (fp16 for the shipped demo), hence the tolerance.
    if not torch.allclose(stored, model.tokenizer.centroids.to(stored), rtol=1e-3, atol=1e-3):
        raise CheckpointError(
            f"{directory}: the DPD's token features are not this tokenizer's centroids: the DPD was trained on "
            "another tokenizer's tokens; assemble the checkpoint from one training run (melody-edge train assemble)"
        )


def build_model(config: MelodyConfig, seed: int = 0) -> MeLoDy:
    """A randomly initialised model, deterministic for ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MeLoDy(config).eval()


def load_model(config_name: str | None = None, checkpoint: str | Path | None = None, seed: int = 0) -> MeLoDy:
    """Resolve ``--config NAME`` (random weights) or ``--checkpoint DIR`` (trained weights)."""
    if checkpoint is not None and config_name is not None:
        raise ConfigError("pass either a checkpoint or a config name, not both")
    if checkpoint is not None:
        return MeLoDy.load(checkpoint)
    return build_model(preset(config_name or "tiny"), seed=seed)


def with_window_seconds(model: MeLoDy, seconds: float) -> MeLoDy:
    """The same weights with a DPD window of ``seconds`` (whole chunks of the config's chunk length).

    Nothing in the DPD depends on the window length (rotary positions only), so only the static
    shapes change; the LM cache grows when the window's tokens no longer fit.
    """
    c = model.config
    chunks = seconds / c.chunk_seconds
    if abs(chunks - round(chunks)) > 1e-6 or round(chunks) < 2:
        raise ConfigError(
            f"window_seconds: {seconds} s is not a whole number (>= 2) of {c.chunk_seconds:g} s chunks; "
            f"choose a multiple of {c.chunk_seconds:g} s such as {2 * c.chunk_seconds:g} or {4 * c.chunk_seconds:g}"
        )
    chunks = round(chunks)
    dpd = dataclasses.replace(c.dpd, chunks=chunks, window_frames=chunks * c.dpd.chunk_frames)
    lm = c.lm
    if lm.max_seq_len < lm.prefix_levels + dpd.window_tokens:
        lm = dataclasses.replace(lm, max_seq_len=lm.prefix_levels + dpd.window_tokens)
    config = dataclasses.replace(c, dpd=dpd, lm=lm)
    clone = MeLoDy.__new__(MeLoDy)
    nn.Module.__init__(clone)
    clone.config = config
    for name in ("dpd", "vae", "conditioner", "tokenizer"):
        setattr(clone, name, getattr(model, name))
    if lm is c.lm:
        clone.lm = model.lm
    else:
        clone.lm = SemanticLM(lm)
        # The cache is a non-persistent buffer: the weights load unchanged into the longer cache.
        clone.lm.load_state_dict(model.lm.state_dict())
    clone.dpd = DualPathDiffusion(dpd)
    clone.dpd.load_state_dict(model.dpd.state_dict())
    return clone.eval()


def with_lm_guidance(model: MeLoDy, scale: float, null_codes: tuple[int, ...] | None = None) -> MeLoDy:
    """The same modules with the LM guidance ``scale`` as the config's default (exports bake it in).

    ``null_codes``: the generic prompt's codes (default: the checkpoint's). Raises ConfigError when
    there are none and ``scale`` is not 1.
    """
    codes = model.config.lm_null_codes if null_codes is None else tuple(int(c) for c in null_codes)
    config = model.config.replace(lm_guidance_scale=float(scale), lm_null_codes=codes)
    clone = MeLoDy.__new__(MeLoDy)
    nn.Module.__init__(clone)
    clone.config = config
    for name in COMPONENTS:
        setattr(clone, name, getattr(model, name))
    return clone.eval()
