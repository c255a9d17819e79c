"""Checkpoint directories: ``config.json`` + ``model.safetensors`` per component, never pickle.

Loading checks the config against the weights and names every mismatch: a missing or unexpected
tensor, a shape that differs from what the config implies, and NaN/Inf values.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigBase, ConfigError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

C = TypeVar("C", bound=ConfigBase)
M = TypeVar("M", bound=nn.Module)


class CheckpointError(RuntimeError):
    """A checkpoint directory cannot be used; the message names the file, the tensor and the fix."""


def state_dict_for_saving(module: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Persistent parameters and buffers, contiguous and detached (runtime caches are non-persistent)."""
    out = {}
    for name, tensor in module.state_dict().items():
        t = tensor.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[name] = t.contiguous().clone()
    return out


def save_component(
    directory: str | Path, config: ConfigBase, module: nn.Module, dtype: torch.dtype | None = None
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically (temp dir + rename)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        config.save(tmp / CONFIG_FILE)
        save_file(
            state_dict_for_saving(module, dtype),
            str(tmp / WEIGHTS_FILE),
            metadata={"config_class": type(config).__name__, "format": "melody-edge/1"},
        )
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def replace_directory(tmp: Path, target: Path) -> None:
    """Move a completed temporary directory onto ``target``, replacing what was there."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: weights file not found; point --checkpoint at a directory written by melody-edge"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); the file is corrupt or truncated"
        ) from exc


def check_weights(
    module: nn.Module, weights: dict[str, torch.Tensor], source: str, allow_missing: tuple[str, ...] = ()
) -> None:
    """Raise :class:`CheckpointError` naming any tensor that does not fit ``module`` or is not finite."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in weights and not k.startswith(allow_missing)]
    unexpected = [k for k in weights if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    for name, tensor in weights.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            problems.append(
                f"{name} has shape {tuple(tensor.shape)} but the config implies {tuple(expected[name].shape)}"
            )
    if problems:
        raise CheckpointError(
            f"{source}: weights do not match config.json ({'; '.join(problems[:4])}). "
            "The config and the weights come from different models: re-save them together."
        )
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{source}: tensor {name} holds {bad} NaN/Inf values; the checkpoint is corrupt "
                "(a diverged training run?) - use an earlier checkpoint"
            )


def load_component(
    directory: str | Path,
    config_cls: type[C],
    build: Callable[[C], M],
    dtype: torch.dtype = torch.float32,
) -> tuple[C, M]:
    """Load a component written by :func:`save_component`, validating config and weights."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    try:
        config = config_cls.load(directory / CONFIG_FILE)
    except ConfigError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: invalid config: {exc}") from exc
    module = build(config)
    weights = load_weights(directory / WEIGHTS_FILE)
    check_weights(module, weights, str(directory / WEIGHTS_FILE))
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}, strict=False)
    module.eval()
    return config, module


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
