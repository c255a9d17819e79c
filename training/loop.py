"""The training loop every component shares: resume, learning-rate schedule, logging, validation,
checkpoints, a wall-clock budget and PyTorch DDP.

A component supplies a :class:`Task`: its modules, its optimizers, one optimisation step and a
validation pass. The loop owns everything else. Each step's batch and noise come from
``data.step_generator(seed, rank, step)``, so a resumed run continues exactly where it stopped.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the loop joins the process group (gloo on CPU,
NCCL on GPUs), tasks wrap their modules with :meth:`Runtime.wrap` (DistributedDataParallel), every
rank draws different batches, and only rank 0 logs, validates and writes checkpoints.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from melody_edge.models.checkpoint import WEIGHTS_FILE, CheckpointError, load_weights, save_component
from melody_edge.models.config import ConfigBase

from .data import step_generator
from .state import has_training_state, load_training, save_training

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class TrainOptions:
    """What every ``melody-edge train`` command accepts (per-component defaults fill ``None``)."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    val_every: int = 100
    save_every: int = 100
    max_minutes: float | None = None
    threads: int | None = None
    fresh: bool = False
    tensorboard: bool = True
    init_from: str | None = None  # a component directory (kept as text: options are saved as JSON)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "val_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"--max-minutes must be > 0, got {self.max_minutes}")
        if self.init_from is not None:
            self.init_from = str(self.init_from)

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(self.steps - self.warmup_steps, 1)
        t = min((step - self.warmup_steps) / span, 1.0)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@dataclasses.dataclass
class Runtime:
    """Where this process trains: rank, world size, device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP around ``module`` when distributed, else ``module`` itself."""
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Average a scalar over ranks (for logging)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world_size


def init_runtime() -> Runtime:
    """Join the process group when launched by torchrun; otherwise a single CPU/GPU process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return Runtime(0, 1, dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dev, backend = torch.device("cuda", local), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Runtime(dist.get_rank(), dist.get_world_size(), dev)


class Task(Protocol):
    """One trainable component."""

    name: str
    config: ConfigBase  # saved as config.json beside model.safetensors
    module: nn.Module  # the component written to model.safetensors
    extra_modules: dict[str, nn.Module]  # other trained modules (discriminators), saved under extra/
    # Optional: names what validation runs on beyond the data (the VAE whose latents the DPD sees);
    # a resumed run whose inputs differ measures its best figure again.
    validation_inputs: str | None
    # Optional: the validation figure that decides best/ (default: loop._PRIMARY's first present).
    primary_metric: str

    def optimizers(self, options: TrainOptions) -> dict[str, torch.optim.Optimizer]: ...

    def attach(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Keep the optimizers (restored on resume) for :meth:`train_step`."""
        ...

    def train_step(self, step: int, gen: torch.Generator) -> dict[str, float]:
        """One optimisation step (forward, backward, clip, optimizer step); returns loss parts."""
        ...

    def validate(self) -> dict[str, float]:
        """Losses on the fixed validation batches (no gradient)."""
        ...


@dataclasses.dataclass
class TrainResult:
    out: Path
    step: int
    finished: bool
    train: dict[str, float]
    validation: dict[str, float]
    wall_seconds: float


class MetricLog:
    """``log.csv`` in long form (step, wall_s, split, metric, value) plus TensorBoard when installed."""

    def __init__(self, out: Path, tensorboard: bool) -> None:
        self.path = out / "log.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(out / "tensorboard"))

    def write(self, step: int, wall: float, split: str, values: dict[str, float]) -> None:
        new = not self.path.is_file()
        with self.path.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["step", "wall_s", "split", "metric", "value"])
            for k, v in values.items():
                w.writerow([step, f"{wall:.1f}", split, k, f"{v:.6g}"])
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{split}/{k}", v, step)
            self.writer.flush()


def read_log(out: Path) -> list[dict[str, Any]]:
    """Rows of ``log.csv`` as dicts (value as float, step as int)."""
    path = Path(out) / "log.csv"
    if not path.is_file():
        return []
    with path.open() as fh:
        return [
            {**r, "step": int(r["step"]), "value": float(r["value"]), "wall_s": float(r["wall_s"])}
            for r in csv.DictReader(fh)
        ]


BEST_DIR = "best"
_PRIMARY = ("ce", "mean", "mrstft", "loss")


def primary_metric(values: dict[str, float], preferred: str | None = None) -> str:
    """The validation figure that decides the best checkpoint: the task's ``preferred`` one when it reports
    it, else the first of ``_PRIMARY`` present."""
    if preferred is not None and preferred in values:
        return preferred
    return next((k for k in _PRIMARY if k in values), next(iter(values)))


def _fmt(values: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in values.items())


def run_training(
    task: Task, out: Path, options: TrainOptions, runtime: Runtime | None = None, log: Log = _stderr
) -> TrainResult:
    """Train ``task`` for ``options.steps`` steps (or until ``max_minutes``), resuming from ``out``."""
    rt = runtime or Runtime()
    out = Path(out)
    if options.threads:
        torch.set_num_threads(options.threads)
    optimizers = task.optimizers(options)
    task.attach(optimizers)
    start, elapsed_before = 0, 0.0
    best = {"value": math.inf, "step": None}
    # What the validation figures were measured on (e.g. the VAE whose latents the DPD sees): a best
    # figure from other inputs says nothing about these, so it must not keep stale weights "best".
    inputs_key = getattr(task, "validation_inputs", None)
    if has_training_state(out) and not options.fresh:
        state = load_training(out, task.module, optimizers, task.extra_modules)
        start, elapsed_before = int(state["step"]), float(state.get("wall_seconds", 0.0))
        saved = state.get("best") or {}
        if saved.get("value") is not None and saved.get("inputs", inputs_key) == inputs_key:
            best = saved
        elif saved.get("value") is not None and rt.is_main:
            log(
                f"[{task.name}] validation inputs changed since step {saved.get('step')} "
                f"({saved.get('inputs')} -> {inputs_key}): the best figure so far is measured again"
            )
        if rt.is_main:
            log(f"[{task.name}] resuming from {out} at step {start}")
    else:
        missing = None
        if options.init_from is not None:
            missing = init_parameters(task.module, options.init_from)
            if rt.is_main:
                extra = f"; new parameters kept at their initial values: {', '.join(missing)}" if missing else ""
                log(f"[{task.name}] starting from the weights in {options.init_from}{extra}")
        if hasattr(task, "on_new_run"):
            task.on_new_run(missing, log if rt.is_main else lambda m: None)
        if rt.is_main and out.exists() and options.fresh:
            (out / "log.csv").unlink(missing_ok=True)
    metrics = MetricLog(out, options.tensorboard) if rt.is_main else None
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    budget = options.max_minutes * 60 if options.max_minutes else math.inf
    train_vals: dict[str, float] = {}
    val_vals: dict[str, float] = {}
    sums: dict[str, float] = {}
    count = 0
    step = start
    last_saved = start

    def save(step_done: int) -> None:
        state = {
            "step": step_done,
            "component": task.name,
            "options": dataclasses.asdict(options),
            "wall_seconds": elapsed_before + time.monotonic() - t0,
            "validation": val_vals,
            "best": best,
            "world_size": rt.world_size,
        }
        save_training(out, task.config, task.module, optimizers, state, task.extra_modules)

    def validate(step_done: int) -> dict[str, float]:
        vals = task.validate()
        metrics.write(step_done, elapsed_before + time.monotonic() - t0, "validation", vals)
        metric = primary_metric(vals, getattr(task, "primary_metric", None))
        value = vals[metric]
        if value < best["value"]:
            # The weights with the lowest validation loss so far: what `assemble` ships (small
            # data sets overfit long before a CPU budget runs out).
            best.update(value=value, step=step_done, metric=metric, inputs=inputs_key)
            save_component(out / BEST_DIR, task.config, task.module)
        return vals

    while step < options.steps:
        if time.monotonic() - t0 > budget:
            if rt.is_main:
                log(f"[{task.name}] time budget of {options.max_minutes} min reached at step {step}")
            break
        lr = options.lr_at(step)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        parts = task.train_step(step, step_generator(options.seed, rt.rank, step))
        bad = [k for k, v in parts.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"[{task.name}] loss {bad[0]} is not finite at step {step}; lower --lr (now {options.lr}) "
                f"or resume from the last checkpoint in {out}"
            )
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        step += 1
        if step % options.log_every == 0 or step == options.steps:
            train_vals = {k: rt.mean(v / count) for k, v in sums.items()}
            sums, count = {}, 0
            if rt.is_main:
                wall = elapsed_before + time.monotonic() - t0
                rate = (step - start) / max(time.monotonic() - t0, 1e-9)
                eta = (options.steps - step) / max(rate, 1e-9)
                metrics.write(step, wall, "train", {**train_vals, "lr": lr})
                log(
                    f"[{task.name}] step {step}/{options.steps}  {_fmt(train_vals)}  lr {lr:.2e}  "
                    f"{rate:.2f} step/s  eta {eta / 60:.1f} min"
                )
        if step % options.val_every == 0 or step == options.steps:
            if rt.is_main:
                val_vals = validate(step)
                log(f"[{task.name}] validation at step {step}: {_fmt(val_vals)}")
            rt.barrier()
        if step % options.save_every == 0 and rt.is_main:
            save(step)
            last_saved = step
    if rt.is_main:
        if not val_vals or step != last_saved:
            val_vals = validate(step)
        if step != last_saved or not has_training_state(out):
            save(step)
        log(f"[{task.name}] saved {out} at step {step}")
    rt.barrier()
    return TrainResult(
        out=out,
        step=step,
        finished=step >= options.steps,
        train=train_vals,
        validation=val_vals,
        wall_seconds=elapsed_before + time.monotonic() - t0,
    )


def init_parameters(module: nn.Module, source: Path) -> list[str]:
    """Copy the parameters ``source`` (a component directory) holds into ``module``; return the ones it lacks.

    Only parameters are taken: buffers (the DPD's token features, the tokenizer-derived state) belong to
    this run's inputs. A tensor the module does not have, or of another shape, is an error: the source is a
    different component or config.
    """
    weights = load_weights(Path(source) / WEIGHTS_FILE)
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    unknown = [k for k in weights if k not in params and k not in buffers]
    wrong = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(p.shape)}"
        for k, p in params.items()
        if k in weights and weights[k].shape != p.shape
    ]
    if unknown or wrong:
        detail = "; ".join(
            ([f"tensors this model lacks: {', '.join(unknown[:4])}"] if unknown else [])
            + ([f"shapes differ: {', '.join(wrong[:4])}"] if wrong else [])
        )
        raise CheckpointError(f"--init-from {source}: not weights of this component and config ({detail})")
    with torch.no_grad():
        for k, p in params.items():
            if k in weights:
                if not bool(torch.isfinite(weights[k]).all()):
                    raise CheckpointError(f"--init-from {source}: tensor {k} holds NaN/Inf values")
                p.copy_(weights[k].to(p))
    return [k for k in params if k not in weights]


def clip_and_step(module: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> float:
    """Clip the gradient norm, step, zero the gradients; returns the pre-clip norm."""
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
