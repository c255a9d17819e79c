"""`melody-edge data {synth,merge}` and `train {tokenizer,conditioner,vae,dpd,lm,all}`: parse, call, print."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click


@click.group()
def data() -> None:
    """Build training data sets."""


@data.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Data set directory to create.")
@click.option("--hours", type=float, default=1.0, show_default=True, help="Total audio to render.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--soundfont", type=click.Path(path_type=Path), default=None, help="A General MIDI .sf2 file.")
@click.option("--clip-seconds", type=float, default=10.0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing data set at --out.")
def synth(out: Path, hours: float, seed: int, soundfont: Path | None, clip_seconds: float, overwrite: bool) -> None:
    """Render captioned clips from music21's bundled scores with FluidSynth (docs/data.md)."""
    from melody_edge.training.data_synth import DataSynthError, synthesize_dataset

    expected = max(1, round(hours * 3600 / clip_seconds))
    try:
        with _clip_progress(expected) as progress:
            summary = synthesize_dataset(
                out, hours, seed, soundfont, clip_seconds, overwrite=overwrite, progress=progress
            )
    except DataSynthError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{summary.clips} clips ({summary.seconds / 3600:.2f} h) in {summary.out}: splits {summary.splits}, "
        f"collections {summary.collections}"
    )


@data.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Data set directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace an existing data set at --out.")
def merge(sources: tuple[Path, ...], out: Path, overwrite: bool) -> None:
    """Merge data sets (e.g. `data synth` runs with different seeds, rendered in parallel) into one."""
    from melody_edge.training.data import DataError
    from melody_edge.training.data_merge import merge_datasets

    try:
        summary = merge_datasets(list(sources), out, overwrite=overwrite)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{summary.clips} clips ({summary.seconds / 3600:.2f} h) in {summary.out}: splits {summary.splits}")


@contextlib.contextmanager
def _clip_progress(expected: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on a terminal; elsewhere (a log file, CI) a line every 5 % with the rate and ETA,
    because click's bar prints nothing until the end when stdout is not a TTY."""
    if sys.stdout.isatty():
        with click.progressbar(length=expected, label="clips") as bar:
            state = {"done": 0}

            def update(done: int, total: int) -> None:
                bar.update(done - state["done"])
                state["done"] = done

            yield update
        return
    t0, state = time.monotonic(), {"next": 0}

    def log_line(done: int, total: int) -> None:
        total = max(total, 1)
        if done >= state["next"] or done == total:
            elapsed = time.monotonic() - t0
            eta = elapsed / max(done, 1) * (total - done)
            click.echo(f"clips {done}/{total} ({100 * done / total:.0f} %), {elapsed:.0f} s elapsed, ETA {eta:.0f} s")
            state["next"] = done + max(1, total // 20)

    yield log_line


def _errors() -> tuple[type[BaseException], ...]:
    from melody_edge.models.checkpoint import CheckpointError
    from melody_edge.models.conditioning import TextEncoderUnavailable
    from melody_edge.models.config import ConfigError
    from melody_edge.models.encoder_tokenizer import AudioEncoderUnavailable
    from melody_edge.training.data import DataError

    errors = (CheckpointError, ConfigError, DataError, TextEncoderUnavailable, AudioEncoderUnavailable)
    return (*errors, ValueError, FloatingPointError)


def _common(f):
    for opt in reversed(
        (
            click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Data set dir."),
            click.option("--config", "config_name", default="demo", show_default=True, help="tiny, demo, edge, paper."),
            click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory."),
            click.option("--seed", type=int, default=0, show_default=True),
        )
    ):
        f = opt(f)
    return f


def _loop_options(f):
    for opt in reversed(
        (
            click.option("--steps", type=int, default=None, help="Optimisation steps (default: per config)."),
            click.option("--batch-size", type=int, default=None),
            click.option("--lr", type=float, default=None),
            click.option("--max-minutes", type=float, default=None, help="Stop (and save) after this wall time."),
            click.option("--threads", type=int, default=None, help="torch CPU threads."),
            click.option("--val-every", type=int, default=None),
            click.option("--save-every", type=int, default=None),
            click.option("--fresh", is_flag=True, help="Ignore a saved training state and start again."),
            click.option(
                "--init-from",
                type=click.Path(path_type=Path),
                default=None,
                help="Start from this component directory's weights (fine-tuning) when RUN has no saved state.",
            ),
        )
    ):
        f = opt(f)
    return f


@click.group()
def train() -> None:
    """Train MeLoDy's components (docs/training.md). Each writes RUN/<component>; run under torchrun for DDP."""


# Each loop-trained component's own options (flag, type, help), passed to pipeline.train_component by name.
_COMPONENT_OPTIONS = {
    "vae": (
        (
            "--disc-start",
            int,
            "Step at which the discriminators switch on (default: per config; raise it to continue on "
            "the reconstruction loss alone).",
        ),
    ),
    "dpd": (
        (
            "--chroma-weight",
            float,
            "Weight of the decoded chroma loss: the DPD's clean-latent estimate, decoded by the VAE, against "
            "the real audio's pitch classes (default: per config, 1 for demo; 0 = velocity loss alone).",
        ),
    ),
    "lm": (
        (
            "--prompt-dropout",
            float,
            "Share of windows trained on the generic prompt's codes (default: per config, 0.2 for demo; 0 = "
            "off): the unconditional branch for guidance on the LM, which the assembled checkpoint then uses "
            "(scale 3).",
        ),
        (
            "--bag-weight",
            float,
            "Weight of every position's prediction scored against its whole window's tokens (default: per "
            "config, 1 for demo; 0 = off): keeps sampled windows in the key they start in.",
        ),
    ),
}


def _run_loop(component: str, data_dir: Path, config_name: str, out: Path, seed: int, **kw) -> None:
    from melody_edge.training import pipeline

    fn = {"vae": pipeline.train_vae, "dpd": pipeline.train_dpd, "lm": pipeline.train_lm}[component]
    own = [flag.lstrip("-").replace("-", "_") for flag, _, _ in _COMPONENT_OPTIONS[component]]
    try:
        extra = {name: kw.pop(name, None) for name in own}
        options = pipeline.default_options(config_name, component, seed=seed, **kw)
        result = fn(data_dir, config_name, out, options, log=lambda m: click.echo(m, err=True), **extra)
    except _errors() as exc:
        raise click.ClickException(str(exc)) from None
    status = "finished" if result.finished else "stopped early (resume with the same command)"
    click.echo(f"{component}: step {result.step} {status}; validation {json.dumps(result.validation)}")


for _name, _doc in (
    ("vae", "VAE-GAN: MR-STFT + KL warm-up, then the discriminators and the paper's full loss."),
    ("dpd", "Dual-path diffusion on VAE latents and semantic tokens (needs RUN/vae and RUN/tokenizer)."),
    ("lm", "Semantic LM on caption codes + semantic tokens (needs RUN/tokenizer and RUN/conditioner)."),
):

    def _make(component: str):
        def command(data_dir, config_name, out, seed, **kw) -> None:
            _run_loop(component, data_dir, config_name, out, seed, **kw)

        return command

    cmd = _common(_loop_options(_make(_name)))
    for _flag, _type, _help in reversed(_COMPONENT_OPTIONS[_name]):
        cmd = click.option(_flag, type=_type, default=None, help=_help)(cmd)
    train.command(name=_name, help=_doc)(cmd)


@train.command()
@_common
@click.option("--max-frames", type=int, default=150_000, show_default=True, help="Frames k-means sees.")
@click.option(
    "--encoder",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A local Hugging Face audio encoder (MERT-v1, w2v-BERT 2.0, HuBERT): k-means over its hidden states "
    "instead of the built-in log-mel features. Later stages of this run use these tokens.",
)
@click.option("--encoder-layer", type=int, default=7, show_default=True, help="Which hidden state (0 = input).")
@click.option("--trust-remote-code", is_flag=True, help="Run model code shipped in the encoder directory (MERT).")
def tokenizer(
    data_dir: Path,
    config_name: str,
    out: Path,
    seed: int,
    max_frames: int,
    encoder: Path | None,
    encoder_layer: int,
    trust_remote_code: bool,
) -> None:
    """Fit the 25 Hz semantic tokenizer (k-means) on the training audio."""
    from melody_edge.training.pipeline import fit_tokenizer

    try:
        report = fit_tokenizer(
            data_dir,
            config_name,
            out,
            seed,
            max_frames,
            log=lambda m: click.echo(m, err=True),
            encoder=encoder,
            encoder_layer=encoder_layer,
            trust_remote_code=trust_remote_code,
        )
    except _errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report))


@train.command()
@_common
def conditioner(data_dir: Path, config_name: str, out: Path, seed: int) -> None:
    """Fit the 12-level residual quantizer over caption embeddings (needs the text encoder)."""
    from melody_edge.training.pipeline import fit_conditioner

    try:
        report = fit_conditioner(data_dir, config_name, out, seed, log=lambda m: click.echo(m, err=True))
    except _errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report))


@train.command(name="all")
@_common
@click.option("--max-minutes", type=float, default=None, help="Wall-time cap for each of vae, dpd and lm.")
def train_all_command(data_dir: Path, config_name: str, out: Path, seed: int, max_minutes: float | None) -> None:
    """tokenizer -> conditioner -> vae -> dpd -> lm -> RUN/checkpoint (resumes what is done)."""
    from melody_edge.training.pipeline import train_all

    over = {n: {"max_minutes": max_minutes} for n in ("vae", "dpd", "lm")} if max_minutes else None
    try:
        result = train_all(data_dir, config_name, out, over, seed, log=lambda m: click.echo(m, err=True))
    except _errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"checkpoint: {result.checkpoint}")


@train.command()
@click.option("--config", "config_name", default="demo", show_default=True, help="tiny, demo, edge, paper.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option("--to", "target", type=click.Path(path_type=Path), default=None, help="Checkpoint dir [RUN/checkpoint].")
@click.option("--fp32", is_flag=True, help="Keep fp32 weights (default: fp16, as shipped).")
def assemble(config_name: str, out: Path, target: Path | None, fp32: bool) -> None:
    """Combine a run's five components (each network's lowest-validation weights) into one checkpoint."""
    from melody_edge.training.run_dir import assemble_checkpoint

    try:
        path = assemble_checkpoint(out, config_name, target, fp16=not fp32)
    except _errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"checkpoint: {path}")


@train.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="Combined checkpoint to measure.")
@click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Data set (its validation split)."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where model_card.json, PNG and WAVs go.")
@click.option("--clips", type=int, default=24, show_default=True, help="Clips generated from held-out captions.")
@click.option("--seconds", type=float, default=10.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--run", type=click.Path(path_type=Path), default=None, help="Run directory: also plot its loss curves (PNG)."
)
def evaluate(
    checkpoint: Path, data_dir: Path, out: Path, clips: int, seconds: float, seed: int, run: Path | None
) -> None:
    """The model card's held-out figures: VAE mel SNR, LM CE vs baselines, DPD loss per angle, key accuracy."""
    from melody_edge.training.evaluate import evaluate_checkpoint, plot_training_curves

    try:
        report = evaluate_checkpoint(
            checkpoint, data_dir, out, clips, seconds, seed, log=lambda m: click.echo(m, err=True)
        )
        if run is not None:
            click.echo(f"loss curves: {plot_training_curves(run, out)}", err=True)
    except _errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({k: report[k] for k in ("vae", "lm", "dpd", "dpd_token_use", "key_accuracy")}, indent=1))
