"""What ``melody-edge train <component>`` and ``train all`` call: data, prerequisites, task, loop.

Every function takes the data directory, a config name (or :class:`MelodyConfig`) and the run
directory, and writes its component to ``RUN/<component>`` (see :mod:`.run_dir`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from melody_edge.models.checkpoint import save_component
from melody_edge.models.conditioning import (
    GENERIC_PROMPT,
    PromptConditioner,
    SentenceEmbeddingTextEncoder,
    default_text_encoder_dir,
)
from melody_edge.models.encoder_tokenizer import encoder_tokenizer_config
from melody_edge.models.melody import MelodyConfig, preset, with_tokenizer
from melody_edge.models.tokenizers import build_tokenizer

from . import features
from .data import TRAIN, VALIDATION, AudioSet, read_index, split_clips
from .loop import Runtime, TrainOptions, TrainResult, init_runtime, run_training
from .run_dir import (
    assemble_checkpoint,
    check_config,
    component_dir,
    load_conditioner,
    load_tokenizer,
    load_vae,
    run_config,
    shipped_dir,
    write_unconditional,
)
from .train_seq import DPDTask, DPDTrainSettings, LMTask, LMTrainSettings
from .train_vae import VAETask, VAETrainSettings

Log = Callable[[str], None]

# Per-config defaults for the iterative trainers; command-line flags override them.
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "vae": {"steps": 20, "batch_size": 2, "lr": 1e-3, "warmup_steps": 2, "val_every": 10, "save_every": 10},
        "dpd": {"steps": 20, "batch_size": 2, "lr": 1e-3, "warmup_steps": 2, "val_every": 10, "save_every": 10},
        "lm": {"steps": 20, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "val_every": 10, "save_every": 10},
    },
    # Sized for 2 CPU cores: VAE and LM side by side (1 thread each) in about 45 minutes, then the DPD
    # (2 threads) in about 35, about 1.5x that with its chroma loss (DPD_SETTINGS; docs/model_card.md); scale up
    # tenfold or more on a GPU.
    "demo": {
        "vae": {"steps": 700, "batch_size": 8, "lr": 1e-3, "warmup_steps": 50, "val_every": 150, "save_every": 50},
        "dpd": {"steps": 800, "batch_size": 4, "lr": 1e-3, "warmup_steps": 50, "val_every": 200, "save_every": 50},
        "lm": {"steps": 650, "batch_size": 16, "lr": 1e-3, "warmup_steps": 50, "val_every": 200, "save_every": 50},
    },
}
# The demo DPD trains with the decoded chroma loss (training/chroma_loss.py); tiny keeps its tests fast.
DPD_SETTINGS = {"tiny": DPDTrainSettings(), "demo": DPDTrainSettings(chroma_weight=1.0)}
# The trained LMs learn the generic prompt on a fifth of their windows, so the assembled checkpoint guides
# its LM (scale 3; docs/model_card.md: guidance doubled the key of the LM's tokens); tiny keeps tests plain.
# The demo LM also scores every position against its whole window (bag_weight 1.0 since the eleventh
# session, 0.5 in the tenth: the key of its generated audio 94 -> 110 of 372 held-out streams, 0 -> 0.5 took
# its sampled tokens 32 -> 46 of 124; docs/model_card.md).
LM_SETTINGS = {"tiny": LMTrainSettings(), "demo": LMTrainSettings(prompt_dropout=0.2, bag_weight=1.0)}
VAE_SETTINGS = {
    "tiny": VAETrainSettings(crop_seconds=0.25, disc_width=2, disc_start=10, val_clips=2, val_seconds=0.5),
    "demo": VAETrainSettings(crop_seconds=0.4, disc_width=8, disc_start=550),
}


def resolve_config(config: MelodyConfig | str) -> MelodyConfig:
    return preset(config) if isinstance(config, str) else config


def default_options(config_name: str, component: str, **overrides: Any) -> TrainOptions:
    base = DEFAULTS.get(config_name, DEFAULTS["demo"]).get(component, {})
    return TrainOptions(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def _audio(data: Path, cfg: MelodyConfig, min_seconds: float = 0.0) -> tuple[AudioSet, AudioSet]:
    clips = read_index(data)
    n = round(min_seconds * cfg.sample_rate)
    return (
        AudioSet(split_clips(clips, TRAIN), cfg.sample_rate, max(n, 1)),
        AudioSet(split_clips(clips, VALIDATION), cfg.sample_rate, max(n, 1)),
    )


def fit_tokenizer(
    data: Path,
    config: MelodyConfig | str,
    run: Path,
    seed: int = 0,
    max_frames: int = 150_000,
    log: Log = print,
    encoder: Path | None = None,
    encoder_layer: int = 7,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Semantic tokenizer on the training audio -> RUN/tokenizer (+ fit.json).

    With ``encoder`` (a local Hugging Face audio encoder directory such as MERT-v1-95M), k-means runs over
    its layer ``encoder_layer`` instead of the built-in log-mel features; the later stages of this run then
    train on those tokens (:func:`~melody_edge.training.run_dir.run_config`).
    """
    cfg = resolve_config(config)
    if encoder is not None:
        tok_cfg = encoder_tokenizer_config(encoder, encoder_layer, trust_remote_code, cfg.lm.vocab_size)
        cfg = with_tokenizer(cfg, tok_cfg)
        log(f"[tokenizer] encoder {encoder}, layer {encoder_layer} ({tok_cfg.feature_dim} wide)")
    t0 = time.monotonic()
    train = AudioSet(split_clips(read_index(data), TRAIN), cfg.sample_rate, cfg.tokenizer.hop_length)
    log(f"[tokenizer] features of {len(train)} clips, k-means with {cfg.tokenizer.vocab_size} centroids")
    tok = build_tokenizer(cfg.tokenizer)
    feats = features.per_clip(train, lambda a: tok.features(a)[0], "features", log)
    history = tok.fit(torch.cat(feats), seed=seed, max_frames=max_frames)
    used = int(torch.unique(torch.cat([tok.tokenize(a[None])[0] for a in train.audio[:64]])).numel())
    report = {
        "kind": cfg.tokenizer.kind,
        "clips": len(train),
        "kmeans_mse": [round(float(h), 5) for h in history],
        "codes_used_first_64_clips": used,
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    _save_fit(run, "tokenizer", cfg.tokenizer, tok, report)
    log(f"[tokenizer] done: k-means mse {report['kmeans_mse'][0]} -> {report['kmeans_mse'][-1]}, {used} codes used")
    return report


def fit_conditioner(
    data: Path, config: MelodyConfig | str, run: Path, seed: int = 0, log: Log = print
) -> dict[str, Any]:
    """12-level residual quantizer over the training captions' text embeddings -> RUN/conditioner."""
    cfg = run_config(run, config)
    t0 = time.monotonic()
    clips = split_clips(read_index(data), TRAIN)
    encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())  # raises TextEncoderUnavailable
    texts = sorted({t for c in clips for t in features.clip_captions(c)})
    log(f"[conditioner] embedding {len(texts)} phrasings of {len(clips)} captions with {encoder.model_dir.name}")
    emb = features.embed_texts(texts, encoder)
    cond = PromptConditioner(cfg.conditioner)
    errors = cond.rvq.fit(emb, seed=seed)
    report = {
        "captions": len(clips),
        "distinct_captions": len({c.caption for c in clips}),
        "distinct_phrasings": len(texts),
        "residual_error_per_level": [round(float(e), 5) for e in errors],
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    _save_fit(run, "conditioner", cfg.conditioner, cond, report)
    log(f"[conditioner] done: residual error after 12 levels {report['residual_error_per_level'][-1]}")
    return report


def _save_fit(run: Path, name: str, config, module, report: dict[str, Any]) -> None:
    d = component_dir(run, name)
    save_component(d, config, module)
    (d / "fit.json").write_text(json.dumps(report, indent=1) + "\n")


def vae_settings(config_name: str, disc_start: int | None = None) -> VAETrainSettings:
    """The config's VAE settings; ``disc_start`` (the step the discriminators switch on) overrides."""
    settings = VAE_SETTINGS.get(config_name, VAETrainSettings())
    if disc_start is None:
        return settings
    if disc_start < 0:
        raise ValueError(f"--disc-start must be >= 0 (the step the discriminators switch on), got {disc_start}")
    return dataclasses.replace(settings, disc_start=disc_start)


def _vae_task(
    data: Path,
    cfg: MelodyConfig,
    run: Path,
    options: TrainOptions,
    rt: Runtime,
    log: Log,
    disc_start: int | None = None,
) -> VAETask:
    settings = vae_settings(cfg.name, disc_start)
    train, val = _audio(data, cfg, settings.val_seconds)
    return VAETask(cfg.vae, train, val, options, settings, rt)


def _token_data(data: Path, cfg: MelodyConfig, run: Path, needed_by: str, log: Log):
    tok = load_tokenizer(run, needed_by)
    digest = features.weights_digest(component_dir(run, "tokenizer"))
    train, val = _audio(data, cfg)
    cache = Path(run) / "cache"
    return (
        train,
        val,
        features.semantic_tokens(cache, TRAIN, train, tok, digest, log),
        features.semantic_tokens(cache, VALIDATION, val, tok, digest, log),
        tok,
    )


def _settings_for(table: dict[str, Any], config_name: str, **overrides: Any) -> Any:
    """The config's row of a per-config settings table (others as demo), with the overrides not None."""
    settings = table.get(config_name, table["demo"])
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(settings, **given) if given else settings


def dpd_settings(config_name: str, chroma_weight: float | None = None) -> DPDTrainSettings:
    """The config's DPD settings (``DPD_SETTINGS``); ``chroma_weight`` overrides."""
    return _settings_for(DPD_SETTINGS, config_name, chroma_weight=chroma_weight)


def lm_settings(
    config_name: str, prompt_dropout: float | None = None, bag_weight: float | None = None
) -> LMTrainSettings:
    """The config's LM settings (``LM_SETTINGS``); ``prompt_dropout`` and ``bag_weight`` override."""
    return _settings_for(LM_SETTINGS, config_name, prompt_dropout=prompt_dropout, bag_weight=bag_weight)


def _dpd_task(
    data: Path,
    cfg: MelodyConfig,
    run: Path,
    options: TrainOptions,
    rt: Runtime,
    log: Log,
    chroma_weight: float | None = None,
) -> DPDTask:
    train, val, tok_train, tok_val, tokenizer = _token_data(data, cfg, run, "train dpd", log)
    vae = load_vae(run, "train dpd")
    digest = features.weights_digest(shipped_dir(run, "vae", "train dpd"))
    cache = Path(run) / "cache"
    z_train = features.vae_latents(cache, TRAIN, train, vae, digest, log)
    z_val = features.vae_latents(cache, VALIDATION, val, vae, digest, log)
    settings = dpd_settings(cfg.name, chroma_weight)
    audio = (train.audio, val.audio) if settings.chroma_weight > 0 else None
    task = DPDTask(cfg.dpd, (z_train, tok_train), (z_val, tok_val), options, settings, rt, vae=vae, audio=audio)
    if cfg.dpd.token_feature_dim:
        task.module.set_token_features(tokenizer.centroids)
    if cfg.dpd.token_prior:
        c = cfg.dpd
        task.module.set_token_prior(*features.fit_token_prior(z_train, tok_train, c.token_vocab, c.frames_per_token))
    task.validation_inputs = (
        f"vae {digest} gain {vae.config.latent_gain:g}, "
        f"tokenizer {features.weights_digest(component_dir(run, 'tokenizer'))}"
        # Another weight changes what best/ is chosen by: measure the best figure again.
        + (f", chroma weight {settings.chroma_weight:g}" if settings.chroma_weight > 0 else "")
    )
    return task


def _codes(data: Path, run: Path, log: Log):
    clips = read_index(data)
    cond = load_conditioner(run, "train lm")
    encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())
    digest = features.weights_digest(component_dir(run, "conditioner"))
    cache = Path(run) / "cache"
    _, train_variants = features.caption_codes(cache, TRAIN, split_clips(clips, TRAIN), cond, encoder, digest, log)
    val_caption, _ = features.caption_codes(
        cache, VALIDATION, split_clips(clips, VALIDATION), cond, encoder, digest, log
    )
    null = cond.tokens_from_prompt([GENERIC_PROMPT], encoder)[0]
    return train_variants, val_caption, cond.rvq.codebooks, null


def _lm_task(
    data: Path,
    cfg: MelodyConfig,
    run: Path,
    options: TrainOptions,
    rt: Runtime,
    log: Log,
    prompt_dropout: float | None = None,
    bag_weight: float | None = None,
) -> LMTask:
    settings = lm_settings(cfg.name, prompt_dropout, bag_weight)  # a bad value fails before any data is read
    _, _, tok_train, tok_val, _ = _token_data(data, cfg, run, "train lm", log)
    codes_train, codes_val, codebooks, null_codes = _codes(data, run, log)
    task = LMTask(
        cfg.lm,
        (codes_train, tok_train),
        (codes_val, tok_val),
        options,
        settings,
        rt,
        codebooks=codebooks,
        null_codes=null_codes,
    )
    if settings.prompt_dropout:
        write_unconditional(run, null_codes.tolist(), GENERIC_PROMPT, settings.prompt_dropout)
    task.validation_inputs = ", ".join(
        f"{name} {features.weights_digest(component_dir(run, name))}" for name in ("tokenizer", "conditioner")
    )
    return task


_TASKS = {"vae": _vae_task, "dpd": _dpd_task, "lm": _lm_task}


def train_component(
    component: str,
    data: Path,
    config: MelodyConfig | str,
    run: Path,
    options: TrainOptions,
    runtime: Runtime | None = None,
    log: Log = print,
    disc_start: int | None = None,
    prompt_dropout: float | None = None,
    chroma_weight: float | None = None,
    bag_weight: float | None = None,
) -> TrainResult:
    """Train ``vae``, ``dpd`` or ``lm`` into ``RUN/<component>``, resuming a saved state.

    ``disc_start`` (VAE only) moves the step where the discriminators switch on, for instance to
    continue a run on the reconstruction loss alone. ``prompt_dropout`` (LM only): the share of windows
    trained on the generic prompt, for guidance (``LMTrainSettings.prompt_dropout``); ``bag_weight`` (LM
    only): the weight of every position scored against its whole window (``LMTrainSettings.bag_weight``).
    ``chroma_weight`` (DPD only): the weight of the decoded chroma loss (``DPDTrainSettings.chroma_weight``).
    """
    cfg = run_config(run, config)
    for name, value, owner in (
        ("--disc-start", disc_start, "vae"),
        ("--prompt-dropout", prompt_dropout, "lm"),
        ("--bag-weight", bag_weight, "lm"),
        ("--chroma-weight", chroma_weight, "dpd"),
    ):
        if value is not None and component != owner:
            raise ValueError(f"{name} applies to the {owner.upper()} only, not to {component}")
    rt = runtime or init_runtime()
    check_config(run, component, getattr(cfg, component))
    extra = {
        "vae": {"disc_start": disc_start},
        "dpd": {"chroma_weight": chroma_weight},
        "lm": {"prompt_dropout": prompt_dropout, "bag_weight": bag_weight},
    }[component]
    make_task = functools.partial(_TASKS[component], **extra)
    task = make_task(data, cfg, run, options, rt, log)
    return run_training(task, component_dir(run, component), options, rt, log)


train_vae = functools.partial(train_component, "vae")
train_dpd = functools.partial(train_component, "dpd")
train_lm = functools.partial(train_component, "lm")


@dataclasses.dataclass
class ChainResult:
    checkpoint: Path
    reports: dict[str, Any]


def train_all(
    data: Path,
    config: MelodyConfig | str,
    run: Path,
    overrides: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    log: Log = print,
) -> ChainResult:
    """tokenizer -> conditioner -> vae -> dpd -> lm -> assembled checkpoint (skipping fitted parts)."""
    cfg = resolve_config(config)
    run = Path(run)
    reports: dict[str, Any] = {}
    rt = init_runtime()
    over = overrides or {}
    if rt.is_main:
        if not (component_dir(run, "tokenizer") / "model.safetensors").is_file():
            reports["tokenizer"] = fit_tokenizer(data, cfg, run, seed=seed, log=log)
        if not (component_dir(run, "conditioner") / "model.safetensors").is_file():
            reports["conditioner"] = fit_conditioner(data, cfg, run, seed=seed, log=log)
    rt.barrier()
    cfg = run_config(run, cfg)  # the run's own tokenizer, if `train tokenizer --encoder` fitted one
    for name, fn in (("vae", train_vae), ("dpd", train_dpd), ("lm", train_lm)):
        opts = default_options(cfg.name, name, seed=seed, **over.get(name, {}))
        result = fn(data, cfg, run, opts, rt, log)
        reports[name] = {"step": result.step, "validation": result.validation, "wall_seconds": result.wall_seconds}
    checkpoint = assemble_checkpoint(run, cfg) if rt.is_main else run / "checkpoint"
    rt.barrier()
    return ChainResult(checkpoint, reports)
