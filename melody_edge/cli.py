"""The ``melody-edge`` command line. Commands parse, call a library function, and print."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from melody_edge.models.checkpoint import CheckpointError
from melody_edge.models.config import ConfigError

DEFAULT_CONFIG = "edge"
DEFAULT_PROMPT = "a cheerful folk tune on fiddle and guitar in D major, 120 bpm"

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, CheckpointError, ValueError, FileNotFoundError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from melody_edge.models.conditioning import TextEncoderUnavailable

    return (*USER_ERRORS, TextEncoderUnavailable, FloatingPointError)


@click.group()
@click.version_option(package_name="melody-edge")
def main() -> None:
    """MeLoDy music generation: reference models, export, streaming runtime."""


def model_options(f):
    f = click.option(
        "--checkpoint", type=click.Path(path_type=Path), default=None, help="Combined checkpoint directory."
    )(f)
    f = click.option(
        "--config",
        "config_name",
        default=None,
        help=f"Built-in config (random weights): tiny, edge, paper. Default: {DEFAULT_CONFIG}.",
    )(f)
    return f


@main.command()
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(checkpoint: Path | None, config_name: str | None, as_json: bool) -> None:
    """Parameters, FLOPs per forward and network passes against MusicLM."""
    from melody_edge.info import format_info, model_info
    from melody_edge.models.melody import MeLoDy, preset

    try:
        config = MeLoDy.load(checkpoint).config if checkpoint else preset(config_name or DEFAULT_CONFIG)
        result = model_info(config)
    except _user_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2) if as_json else format_info(result))


@main.command()
@model_options
@click.option("--prompt", default=None, help=f"Text prompt (needs a text encoder). Default: {DEFAULT_PROMPT!r}.")
@click.option("--tokens", default=None, help="12 comma-separated conditioning codes instead of a prompt.")
@click.option("--seconds", default=10.0, show_default=True, type=float, help="Duration of audio to generate.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("out/melody.wav"), show_default=True, help="WAV file."
)
@click.option("--steps", type=int, default=None, help="Sampler steps T (default: the config's).")
@click.option("--cfg", "guidance", type=float, default=None, help="Guidance scale (default: the config's, 2.5).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=float, default=None, help="LM sampling temperature (0 = greedy).")
@click.option("--top-k", type=int, default=None, help="LM top-k (0 = off).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(
    checkpoint: Path | None,
    config_name: str | None,
    prompt: str | None,
    tokens: str | None,
    seconds: float,
    out: Path,
    steps: int | None,
    guidance: float | None,
    seed: int,
    temperature: float | None,
    top_k: int | None,
    quiet: bool,
) -> None:
    """Stream music to a 24 kHz WAV, chunk by chunk, and write a JSON report beside it."""
    from melody_edge.runtime.reference import generate_reference

    try:
        report = generate_reference(
            checkpoint=checkpoint,
            config_name=None if checkpoint else (config_name or DEFAULT_CONFIG),
            prompt=prompt if (prompt or tokens) else DEFAULT_PROMPT,
            tokens=tokens,
            seconds=seconds,
            out=out,
            steps=steps,
            guidance_scale=guidance,
            seed=seed,
            temperature=temperature,
            top_k=top_k,
            progress=not quiet,
        )
    except KeyboardInterrupt:
        click.echo(f"interrupted: {out} holds the chunks generated so far", err=True)
        sys.exit(130)
    except _user_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote {report['wav']} ({report['seconds_written']:.2f} s) and {out.with_suffix('.json')}\n"
        f"time to first audio {report['time_to_first_audio_s']:.3f} s, real-time factor "
        f"{report['real_time_factor']:.3f}, chunk latency p50 {report['chunk_latency_p50_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
