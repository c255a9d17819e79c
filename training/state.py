"""Resumable training state without pickle: JSON for numbers, safetensors for tensors.

A component's training directory::

    config.json, model.safetensors      # the component, loadable by models.checkpoint.load_component
    extra/<name>/...                     # other trained modules (the VAE's discriminators)
    train_state/state.json               # step, options, history tail, format version
    train_state/optim.safetensors        # every optimizer's per-parameter state, flattened
    train_state/optim.json               # their param_groups (learning rates, betas, ...)
    log.csv                              # one row per logged step (and validation rows)
    unconditional.json                   # (LM with prompt dropout) the generic prompt's codes

Everything is written to a temporary directory and renamed, so an interrupted save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from melody_edge.models.checkpoint import CheckpointError, save_component
from melody_edge.models.config import ConfigBase

STATE_DIR = "train_state"
STATE_VERSION = 1


def optimizer_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into flat tensors and a JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{idx}.{key}"] = value.detach().contiguous().clone()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, slot = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[slot] = value
    for key, value in meta.get("scalars", {}).items():
        idx, slot = key.split(".", 1)
        state.setdefault(int(idx), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training(
    directory: Path,
    config: ConfigBase,
    module: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    extra_modules: dict[str, nn.Module] | None = None,
) -> None:
    """Write the component and its training state atomically into ``directory``."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_component(tmp / "component", config, module)
        for name in ("config.json", "model.safetensors"):
            os.replace(tmp / "component" / name, tmp / name)
        os.rmdir(tmp / "component")
        for name, extra in (extra_modules or {}).items():
            (tmp / "extra").mkdir(exist_ok=True)
            save_file(
                {k: v.detach().contiguous().clone() for k, v in extra.state_dict().items()},
                str(tmp / "extra" / f"{name}.safetensors"),
            )
        sdir = tmp / STATE_DIR
        sdir.mkdir()
        tensors: dict[str, torch.Tensor] = {}
        metas = {}
        for name, opt in optimizers.items():
            t, m = optimizer_tensors(name, opt)
            tensors.update(t)
            metas[name] = m
        save_file(tensors, str(sdir / "optim.safetensors"))
        (sdir / "optim.json").write_text(json.dumps(metas, indent=1))
        (sdir / "state.json").write_text(json.dumps({"version": STATE_VERSION, **state}, indent=1))
        # Files others write beside the component (the loop's log.csv, the LM's unconditional.json that
        # `train assemble` reads to guide the LM) are carried over; the save rewrites only its own.
        if directory.is_dir():
            for f in directory.iterdir():
                if f.is_file() and not (tmp / f.name).exists():
                    shutil.copy2(f, tmp / f.name)
        # Written by the loop between saves, carried into the new checkpoint: the best weights are
        # copied (a failed save must not lose them), TensorBoard's directory is moved (its writer keeps
        # the open event file).
        if (directory / "best").is_dir():
            shutil.copytree(directory / "best", tmp / "best")
        if (directory / "tensorboard").is_dir():
            os.replace(directory / "tensorboard", tmp / "tensorboard")
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def has_training_state(directory: Path) -> bool:
    return (Path(directory) / STATE_DIR / "state.json").is_file()


def load_training(
    directory: Path,
    module: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    extra_modules: dict[str, nn.Module] | None = None,
) -> dict[str, Any]:
    """Restore weights and optimizer state saved by :func:`save_training`; return the state dict."""
    directory = Path(directory)
    sdir = directory / STATE_DIR
    try:
        state = json.loads((sdir / "state.json").read_text())
        if state.get("version") != STATE_VERSION:
            raise CheckpointError(
                f"{sdir / 'state.json'}: training-state version {state.get('version')} is not {STATE_VERSION}; "
                "resume with the melody-edge version that wrote it, or start again with --fresh"
            )
        module.load_state_dict(load_file(str(directory / "model.safetensors")))
        for name, extra in (extra_modules or {}).items():
            extra.load_state_dict(load_file(str(directory / "extra" / f"{name}.safetensors")))
        tensors = load_file(str(sdir / "optim.safetensors"))
        metas = json.loads((sdir / "optim.json").read_text())
        for name, opt in optimizers.items():
            restore_optimizer(name, opt, tensors, metas[name])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{directory}: cannot resume ({type(exc).__name__}: {exc}); the training state is incomplete or "
            "from a different config. Start again with --fresh or point --out elsewhere."
        ) from exc
    return state
