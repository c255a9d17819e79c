"""The ``melody-edge`` command line. Commands parse, call a library function, and print."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from melody_edge.default_model import resolve_source
from melody_edge.models.checkpoint import CheckpointError
from melody_edge.models.config import ConfigError

DEFAULT_PROMPT = "a fiddle tune in D major, 2/4 at 132 bpm, played by violin with drums"

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, CheckpointError, ValueError, FileNotFoundError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from melody_edge.models.conditioning import TextEncoderUnavailable

    return (*USER_ERRORS, TextEncoderUnavailable, FloatingPointError)


@click.group()
@click.version_option(package_name="melody-edge")
def main() -> None:
    """MeLoDy music generation: reference models, export, streaming runtime."""
    # torchao warns on import about GPU kernels a CPU wheel cannot load, torch about enum
    # registration, coremltools (off macOS) that it cannot run models: noise to a user; export
    # says itself when Core ML was not run.
    for name in ("torchao", "torch.utils._pytree", "coremltools"):
        logging.getLogger(name).setLevel(logging.ERROR)


def model_options(f):
    f = click.option(
        "--checkpoint", type=click.Path(path_type=Path), default=None, help="Combined checkpoint directory."
    )(f)
    f = click.option(
        "--config",
        "config_name",
        default=None,
        help="Built-in config with random weights: tiny, demo, edge, paper. Default: the trained demo checkpoint.",
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
        name, checkpoint = resolve_source(checkpoint, config_name)
        config = MeLoDy.load(checkpoint).config if checkpoint else preset(name)
        result = model_info(config)
    except _user_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2) if as_json else format_info(result))


first_steps_option = click.option(
    "--first-steps",
    type=int,
    default=0,
    help="Sampler steps of the first chunk only (default: --steps). Fewer bring the first audio sooner; "
    "that chunk is coarser.",
)


@main.command()
@model_options
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="Run an exported bundle instead.")
@click.option("--backend", "backend_name", default=None, help="Bundle backend: executorch, onnx, coreml.")
@click.option("--prompt", default=None, help=f"Text prompt or a bundle preset name. Default: {DEFAULT_PROMPT!r}.")
@click.option("--tokens", default=None, help="12 comma-separated conditioning codes instead of a prompt.")
@click.option("--seconds", default=10.0, show_default=True, type=float, help="Duration of audio to generate.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("out/melody.wav"), show_default=True, help="WAV file."
)
@click.option("--steps", type=int, default=None, help="Sampler steps T (default: the config's).")
@first_steps_option
@click.option("--cfg", "guidance", type=float, default=None, help="Guidance scale (default: the config's, 2.5).")
@click.option(
    "--lm-cfg",
    "lm_guidance",
    type=float,
    default=None,
    help="Classifier-free guidance on the LM (default: the checkpoint's; 1 = off). A bundle's is fixed at export.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=float, default=None, help="LM sampling temperature (0 = greedy).")
@click.option("--top-k", type=int, default=None, help="LM top-k (0 = off).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(
    checkpoint: Path | None,
    config_name: str | None,
    bundle: Path | None,
    backend_name: str | None,
    prompt: str | None,
    tokens: str | None,
    seconds: float,
    out: Path,
    steps: int | None,
    first_steps: int,
    guidance: float | None,
    lm_guidance: float | None,
    seed: int,
    temperature: float | None,
    top_k: int | None,
    quiet: bool,
) -> None:
    """Stream music to a 24 kHz WAV, chunk by chunk, and write a JSON report beside it."""
    from melody_edge.runtime.bundle_generate import generate_from_bundle
    from melody_edge.runtime.reference import generate_reference

    common = dict(
        tokens=tokens,
        seconds=seconds,
        out=out,
        steps=steps,
        first_steps=first_steps,
        guidance_scale=guidance,
        seed=seed,
        temperature=temperature,
        top_k=top_k,
        lm_guidance=lm_guidance,
        progress=not quiet,
    )
    if bundle and (checkpoint or config_name):
        raise click.UsageError("--bundle runs an exported bundle; drop --checkpoint/--config")
    if backend_name and not bundle:
        raise click.UsageError("--backend applies to --bundle")
    try:
        if bundle:
            default = prompt if (prompt or tokens) else None
            report = generate_from_bundle(bundle, prompt=default, backend_name=backend_name, **common)
        else:
            name, source = resolve_source(checkpoint, config_name)
            report = generate_reference(
                checkpoint=source,
                config_name=name,
                prompt=prompt if (prompt or tokens) else DEFAULT_PROMPT,
                **common,
            )
    except KeyboardInterrupt:
        click.echo(f"interrupted: {out} holds the chunks generated so far", err=True)
        sys.exit(130)
    except _export_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote {report['wav']} ({report['seconds_written']:.2f} s) and {out.with_suffix('.json')}\n"
        f"time to first audio {report['time_to_first_audio_s']:.3f} s, real-time factor "
        f"{report['real_time_factor']:.3f}, chunk latency p50 {report['chunk_latency_p50_s']:.3f} s"
    )


def _export_errors() -> tuple[type[BaseException], ...]:
    from melody_edge.export.bundle import ExportError
    from melody_edge.export.parity import ParityError
    from melody_edge.quantization.recipes import RecipeError
    from melody_edge.runtime.manifest import BundleError
    from melody_edge.runtime.open import BackendUnavailable

    return (*_user_errors(), ExportError, ParityError, RecipeError, BundleError, BackendUnavailable)


@main.command("export")
@model_options
@click.option("--target", default=None, help="executorch-xnnpack, executorch-coreml, coreml or onnx.")
@click.option("--recipe", "recipe_name", default=None, help="fp32, fp16, int8, int4, palettize6 (per target).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle directory (or parent with --all).")
@click.option("--all", "build_all", is_flag=True, help="Every target x recipe this host can build, one bundle each.")
@click.option("--steps", type=int, default=None, help="Sampler steps T baked into the bundle (default: config's).")
@click.option("--window-seconds", type=float, default=None, help="DPD window length (whole chunks; default 10).")
@click.option(
    "--lm-cfg",
    "lm_guidance",
    type=float,
    default=None,
    help="LM classifier-free guidance baked into the LM program (default: the checkpoint's; 1 = off).",
)
@click.option("--no-verify", is_flag=True, help="Skip the parity gate (the bundle then has no parity.json).")
@click.option("--force", is_flag=True, help="Replace an existing bundle directory.")
@click.option("--group-size", type=int, default=None, help="int4 group size override.")
@click.option("--keep-float", multiple=True, help="Keep this layer (or glob) in float; repeatable.")
@click.option("--no-sampler", is_flag=True, help="Skip the unrolled T-step sampler artifact (faster export).")
@click.option("--encoder", is_flag=True, help="Also export the VAE encoder (continuing a user's audio).")
@click.option("--presets", type=click.Path(path_type=Path), default=None, help="JSON prompt presets with tokens.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of a built-in config's random weights.")
def export_cmd(
    checkpoint: Path | None,
    config_name: str | None,
    target: str | None,
    recipe_name: str | None,
    out: Path,
    build_all: bool,
    steps: int | None,
    window_seconds: float | None,
    lm_guidance: float | None,
    no_verify: bool,
    force: bool,
    group_size: int | None,
    keep_float: tuple[str, ...],
    no_sampler: bool,
    encoder: bool,
    presets: Path | None,
    seed: int,
) -> None:
    """Quantize and export to a deployable bundle behind a parity gate."""
    from melody_edge.export.bundle import export_bundle, preset_tokens
    from melody_edge.export.export_all import export_all, format_rows, load_presets
    from melody_edge.models.melody import load_model, with_lm_guidance, with_window_seconds
    from melody_edge.quantization.recipes import load_recipe

    if build_all and (target or recipe_name):
        raise click.UsageError("--all builds every target and recipe; drop --target/--recipe")
    if not build_all and not (target and recipe_name):
        raise click.UsageError("pass --target and --recipe, or --all")
    try:
        recipe = None
        if not build_all:  # an unknown target or recipe is refused before the model is loaded
            recipe = load_recipe(target, recipe_name)
            if group_size is not None or keep_float:
                recipe = recipe.override(group_size=group_size, keep_float=keep_float or None)
        config_name, checkpoint = resolve_source(checkpoint, config_name)
        model = load_model(config_name, checkpoint, seed=seed)
        if window_seconds is not None:
            model = with_window_seconds(model, window_seconds)
        if lm_guidance is not None:
            model = with_lm_guidance(model, lm_guidance)
        preset_list = load_presets(presets, model) if presets else preset_tokens(model)
        options = dict(
            steps=steps,
            verify=not no_verify,
            force=force,
            sampler_artifact=not no_sampler,
            encoder_artifact=encoder,
            presets=preset_list,
            model_source=(
                {"checkpoint": str(checkpoint.resolve())} if checkpoint else {"config": config_name, "seed": seed}
            )
            | {"window_seconds": window_seconds},
        )
        if build_all:
            rows = export_all(model, out, log=click.echo, **options)
            click.echo(format_rows(rows))
            if any(r["status"] == "failed" for r in rows):
                sys.exit(1)
            return
        export_bundle(model, target, recipe, out, log=click.echo, **options)
    except KeyboardInterrupt:
        click.echo(f"interrupted: nothing was written at {out}", err=True)
        sys.exit(130)
    except _export_errors() as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@model_options
@click.option("--target", required=True, help="The target whose recipe to analyse.")
@click.option("--recipe", "recipe_name", required=True, help="The recipe whose weight scheme to apply.")
@click.option("--report", is_flag=True, required=True, help="Print per-layer sensitivity (required).")
@click.option("--component", type=click.Choice(["lm", "dpd", "all"]), default="all", show_default=True)
@click.option("--top", type=int, default=12, show_default=True, help="Rows per component in the table.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write JSON here.")
@click.option("--seed", type=int, default=0, show_default=True)
def quantize(
    checkpoint: Path | None,
    config_name: str | None,
    target: str,
    recipe_name: str,
    report: bool,
    component: str,
    top: int,
    json_out: Path | None,
    seed: int,
) -> None:
    """Per-layer quantization sensitivity: which layers to keep in higher precision."""
    from melody_edge.models.melody import load_model
    from melody_edge.quantization.recipes import load_recipe
    from melody_edge.quantization.sensitivity import format_sensitivity, model_sensitivity

    try:
        recipe = load_recipe(target, recipe_name)
        model = load_model(*resolve_source(checkpoint, config_name), seed=seed)
        comps = ("lm", "dpd") if component == "all" else (component,)
        result = model_sensitivity(model, recipe, comps, log=lambda m: click.echo(m, err=True))
    except _export_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_sensitivity(result, recipe, top))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, default=float) + "\n")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--backend", "backend_name", default=None, help="executorch, onnx or coreml (default: the target's).")
@click.option("--seconds", type=float, default=30.0, show_default=True, help="Audio streamed through both.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prompt", default=None, help="A preset name or text (default: the first preset).")
@click.option("--fd-seeds", type=int, default=3, show_default=True, help="Seeds for the Fréchet check (quantized).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Reference (default: manifest's).")
@click.option("--config", "config_name", default=None, help="Reference built-in config (default: manifest's).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(
    bundle: Path,
    backend_name: str | None,
    seconds: float,
    seed: int,
    prompt: str | None,
    fd_seeds: int,
    checkpoint: Path | None,
    config_name: str | None,
    as_json: bool,
) -> None:
    """End-to-end parity of BUNDLE against the PyTorch reference (tokens, latents, audio per chunk)."""
    from melody_edge.runtime.verify import format_verify, verify_bundle

    try:
        report = verify_bundle(
            bundle,
            backend_name=backend_name,
            checkpoint=checkpoint,
            config_name=config_name,
            seconds=seconds,
            seed=seed,
            prompt=prompt,
            fd_seeds=fd_seeds,
            log=lambda m: click.echo(m, err=True),
        )
    except _export_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2, default=float) if as_json else format_verify(report))
    if not report["gate"]["passed"]:
        sys.exit(1)


@main.command("bench")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Audio streamed per run.")
@click.option("--threads", type=int, default=None, help="CPU threads per run (default: all cores).")
@click.option("--steps", type=int, default=None, help="Sampler steps (default: each bundle's).")
@first_steps_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-eager", is_flag=True, help="Leave out the PyTorch eager reference run.")
@click.option("--stepwise", is_flag=True, help="Run T network calls even where a bundle has the unrolled sampler.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="PNG of per-chunk latency.")
def bench_cmd(
    bundles: tuple[Path, ...],
    seconds: float,
    threads: int | None,
    steps: int | None,
    first_steps: int,
    seed: int,
    no_eager: bool,
    stepwise: bool,
    json_out: Path | None,
    plot: Path | None,
) -> None:
    """Stream from BUNDLES and the eager reference side by side: latency, RTF, memory, size."""
    from melody_edge.runtime.bench import bench, format_bench, plot_bench
    from melody_edge.runtime.wav import atomic_write_text

    try:
        result = bench(
            list(bundles),
            seconds=seconds,
            threads=threads,
            steps=steps,
            first_steps=first_steps,
            seed=seed,
            include_eager=not no_eager,
            use_sampler=not stepwise,
            log=lambda m: click.echo(m, err=True),
        )
    except _export_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_bench(result))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_out, json.dumps(result, indent=2, default=float) + "\n")
        click.echo(f"wrote {json_out}")
    if plot:
        click.echo(f"wrote {plot_bench(result, plot)}")


def _register() -> None:
    from melody_edge.cli_train import data, train

    main.add_command(data)
    main.add_command(train)


_register()

if __name__ == "__main__":
    main()
