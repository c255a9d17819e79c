"""The training run directory: one sub-directory per component, a feature cache, the assembled checkpoint.

::

    RUN/tokenizer  RUN/conditioner  RUN/vae  RUN/dpd  RUN/lm   # config.json + model.safetensors (+ train_state/)
    RUN/cache/                                                # features keyed by the weights that made them
    RUN/checkpoint/                                           # the combined MeLoDy checkpoint (assemble)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from melody_edge.models.checkpoint import CheckpointError, load_component
from melody_edge.models.conditioning import ConditionerConfig, PromptConditioner
from melody_edge.models.config import ConfigError
from melody_edge.models.melody import MeLoDy, MelodyConfig, build_model, preset, with_tokenizer
from melody_edge.models.semantic_tokenizer import CentroidTokenizer
from melody_edge.models.tokenizers import load_tokenizer_component, tokenizer_config_class
from melody_edge.models.vae import VAE, VAEConfig

BEST_DIR = "best"  # training.loop.BEST_DIR
ORDER = ("tokenizer", "conditioner", "vae", "dpd", "lm")
_HOW = {
    "tokenizer": "melody-edge train tokenizer",
    "conditioner": "melody-edge train conditioner",
    "vae": "melody-edge train vae",
    "dpd": "melody-edge train dpd",
    "lm": "melody-edge train lm",
}


# Written by `train lm --prompt-dropout`: the generic prompt's codes, the LM's unconditional branch.
UNCONDITIONAL_FILE = "unconditional.json"
# The LM guidance an assembled checkpoint gets when its LM has an unconditional branch: the scale
# measured in docs/model_card.md (lm_key_probe.py), against 1 (no guidance).
DEFAULT_LM_GUIDANCE = 3.0


def write_unconditional(run: Path, null_codes: list[int], prompt: str, prompt_dropout: float) -> Path:
    path = component_dir(run, "lm") / UNCONDITIONAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"prompt": prompt, "codes": [int(c) for c in null_codes], "prompt_dropout": prompt_dropout}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def lm_guidance_fields(run: Path) -> dict:
    """``lm_null_codes`` and ``lm_guidance_scale`` for the checkpoint, when the LM learnt the generic prompt."""
    path = component_dir(run, "lm") / UNCONDITIONAL_FILE
    if not path.is_file():
        return {}
    try:
        codes = json.loads(path.read_text())["codes"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); rerun `train lm --prompt-dropout` or delete it") from exc
    return {"lm_null_codes": tuple(int(c) for c in codes), "lm_guidance_scale": DEFAULT_LM_GUIDANCE}


def component_dir(run: Path, name: str) -> Path:
    return Path(run) / name


def require_component(run: Path, name: str, needed_by: str) -> Path:
    d = component_dir(run, name)
    if not (d / "model.safetensors").is_file():
        raise CheckpointError(
            f"{d}: no trained {name}; `{needed_by}` needs it. Run `{_HOW[name]} --data DATA --out {run}` first "
            "(or `melody-edge train all`)."
        )
    return d


def shipped_dir(run: Path, name: str, needed_by: str) -> Path:
    """Where the weights that ship (and that later stages must build on) live: ``best/`` when the loop
    kept lowest-validation weights, else the component directory (fitted parts, or no validation yet)."""
    d = require_component(run, name, needed_by)
    return d / BEST_DIR if (d / BEST_DIR / "model.safetensors").is_file() else d


def check_config(run: Path, name: str, expected) -> None:
    """Refuse a component trained under a different config than the one asked for now."""
    d = component_dir(run, name)
    if (d / "config.json").is_file():
        got = type(expected).load(d / "config.json")
        if got != expected:
            raise CheckpointError(
                f"{d / 'config.json'} was trained with a different {name} config than --config asks for; "
                "use the same --config, or another --out"
            )


def load_tokenizer(run: Path, needed_by: str) -> CentroidTokenizer:
    return load_tokenizer_component(require_component(run, "tokenizer", needed_by))[1]


def run_config(run: Path, config: MelodyConfig | str) -> MelodyConfig:
    """The config a run trains: ``config``, with the run's own tokenizer where it is of another kind (one
    fitted on a learned encoder by ``train tokenizer --encoder``), so later stages need no extra flag."""
    cfg = preset(config) if isinstance(config, str) else config
    d = component_dir(run, "tokenizer")
    if not (d / "config.json").is_file():
        return cfg
    config_cls = tokenizer_config_class(d)
    if config_cls is type(cfg.tokenizer):
        return cfg
    try:
        return with_tokenizer(cfg, config_cls.load(d / "config.json"))
    except ConfigError as exc:
        raise CheckpointError(f"{d / 'config.json'}: invalid tokenizer config: {exc}") from exc


def load_conditioner(run: Path, needed_by: str) -> PromptConditioner:
    d = require_component(run, "conditioner", needed_by)
    return load_component(d, ConditionerConfig, PromptConditioner)[1]


def load_vae(run: Path, needed_by: str) -> VAE:
    """The VAE that :func:`assemble_checkpoint` ships, so the DPD learns the latents it will decode."""
    return load_component(shipped_dir(run, "vae", needed_by), VAEConfig, VAE)[1]


def assemble_checkpoint(
    run: Path, config: MelodyConfig | str, out: Path | None = None, fp16: bool = True, best: bool = True
) -> Path:
    """Combine the five trained components into one MeLoDy checkpoint (fp16 weights by default).

    ``best``: take each network's lowest-validation weights (``RUN/<name>/best``) where they exist.
    """
    run = Path(run)
    cfg = run_config(run, config)
    cfg = cfg.replace(**lm_guidance_fields(run))
    model = build_model(cfg)
    for name in ORDER:
        d = shipped_dir(run, name, "assemble") if best else require_component(run, name, "assemble")
        check_config(run, name, getattr(cfg, name))
        if name == "tokenizer":
            module = load_tokenizer_component(d)[1]
        else:
            _, module = load_component(d, type(getattr(cfg, name)), type(getattr(model, name)))
        setattr(model, name, module)
    target = Path(out) if out is not None else run / "checkpoint"
    model.save(target, dtype=torch.float16 if fp16 else None)
    MeLoDy.load(target)  # round trip: fails loudly if anything does not fit
    return target
