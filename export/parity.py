"""The parity gate: run every exported component this host can run against the eager reference.

Inputs are realistic: the conditioning tokens of a preset, the semantic tokens the LM generates,
and the latents of the sampler's trajectory, all recorded from the eager streaming pipeline.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..models.melody import MeLoDy
from ..quantization.recipes import Recipe
from ..runtime.backend import Backend
from ..runtime.eager import EagerBackend
from ..runtime.pipeline import GenerationSettings, StreamingGenerator


class ParityError(RuntimeError):
    """The exported bundle does not meet its recipe's thresholds."""


def compare(ref: Tensor, out: Tensor) -> dict:
    """SNR / PSNR (dB), cosine, max abs error and NaN/Inf count of ``out`` against ``ref``."""
    ref = ref.detach().double().reshape(-1)
    out = out.detach().double().reshape(-1)
    bad = int((~torch.isfinite(out)).sum())
    err = (out - ref)[torch.isfinite(out)]
    noise = float(err.pow(2).mean()) if err.numel() else math.inf
    signal = float(ref.pow(2).mean())
    peak = float(ref.abs().max())
    cos = float(torch.nn.functional.cosine_similarity(ref, torch.nan_to_num(out), dim=0))
    return {
        "snr_db": _db(signal, noise),
        "psnr_db": _db(peak**2, noise),
        "cosine": cos,
        "max_abs_error": float(err.abs().max()) if err.numel() else math.inf,
        "nan_inf": bad,
        "values": int(ref.numel()),
    }


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-30) / noise)


@dataclasses.dataclass
class RecordedInputs:
    prefix: list[int]
    dpd: list[tuple[Tensor, Tensor, Tensor]]
    vae: list[Tensor]
    first_window: tuple[Tensor, Tensor, Tensor, Tensor] | None  # z, angles, target, tokens of chunk 0
    # What the eager model returned for those inputs: the float reference's outputs, kept so the gate
    # does not run the reference a second time (on `paper` that is a third of the gate's time).
    dpd_out: list[Tensor] = dataclasses.field(default_factory=list)
    vae_out: list[Tensor] = dataclasses.field(default_factory=list)


def record_inputs(model: MeLoDy, prefix: list[int], steps: int, guidance: float, chunks: int = 2) -> RecordedInputs:
    """Run the eager pipeline for ``chunks`` chunks and keep every DPD and VAE input it built."""
    backend = EagerBackend(model)
    rec = RecordedInputs(prefix, [], [], None)

    def recorder(event: str, payload: dict) -> None:
        if event == "dpd":
            rec.dpd.append((payload["z"].clone(), payload["angles"].clone(), payload["tokens"].clone()))
            rec.dpd_out.append(payload["v"].clone())
        elif event == "vae_decode":
            rec.vae.append(payload["z"].clone())
            rec.vae_out.append(payload["audio"].clone())

    gen = StreamingGenerator(backend, backend.spec, recorder)
    seconds = chunks * backend.spec.chunk_frames / backend.spec.latent_rate
    settings = GenerationSettings(seconds=seconds, steps=steps, guidance_scale=guidance, seed=0)
    for _ in gen.stream(prefix, settings):
        pass
    z, angles, tokens = rec.dpd[0]
    c = backend.spec.chunk_frames
    target = torch.zeros(1, z.shape[-1])
    target[:, :c] = 1.0
    rec.first_window = (z[:1], angles[:1], target, tokens[:1])
    return rec


def lm_parity(ref: Backend, bundle: Backend, prefix_ids: Tensor, n_tokens: int) -> dict:
    """Greedy generation with both; then the bundle teacher-forced on the reference's tokens."""

    def greedy(backend: Backend) -> tuple[list[int], list[Tensor]]:
        backend.lm_reset()
        logits = backend.lm_prefill(prefix_ids, 0)
        tokens, all_logits = [], [logits]
        for i in range(n_tokens):
            tok = int(torch.argmax(logits))
            tokens.append(tok)
            if i < n_tokens - 1:
                logits = backend.lm_decode(tok, len(prefix_ids) + i)
                all_logits.append(logits)
        return tokens, all_logits

    ref_tokens, ref_logits = greedy(ref)
    out_tokens, _ = greedy(bundle)
    # Teacher forcing: the bundle reads the reference's tokens and predicts each next one.
    bundle.lm_reset()
    forced = [bundle.lm_prefill(prefix_ids, 0)]
    for i, tok in enumerate(ref_tokens[:-1]):
        forced.append(bundle.lm_decode(tok, len(prefix_ids) + i))
    top1 = float(np.mean([int(torch.argmax(f)) == t for f, t in zip(forced, ref_tokens)]))
    match = [a == b for a, b in zip(ref_tokens, out_tokens)]
    first_diff = next((i for i, m in enumerate(match) if not m), None)
    stats = compare(torch.stack(ref_logits), torch.stack(forced))
    return {
        **stats,
        "greedy_tokens": n_tokens,
        "greedy_match": float(np.mean(match)),
        "greedy_first_mismatch": first_diff,
        "teacher_forced_top1": top1,
    }


def run_parity(
    reference: MeLoDy,
    quantized_eager: MeLoDy | None,
    bundle: Backend,
    manifest: dict,
    recipe: Recipe,
    bundle_dir=None,
    lm_tokens: int = 48,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Compare the bundle with the float reference (and the quantized eager model), then gate.

    ``log`` receives one line per stage: on a large config each stage takes minutes.
    """
    preset = manifest["presets"][0]
    sampler = manifest["sampler"]
    t0 = time.perf_counter()
    log("  parity: recording inputs from the eager streaming pipeline (2 chunks) ...")
    inputs = record_inputs(reference, preset["tokens"], sampler["steps"], sampler["guidance_scale"])
    ref_backend = EagerBackend(reference)
    refs = {"float": ref_backend}
    if quantized_eager is not None:
        refs["quantized_eager"] = EagerBackend(quantized_eager)
    spec = bundle.spec
    prefix_ids = spec.vocab_size + torch.arange(spec.prefix_levels) * spec.prefix_codebook_size
    prefix_ids = prefix_ids + torch.tensor(preset["tokens"])

    report: dict = {"recipe": recipe.name, "target": manifest["target"], "components": {}, "inputs": {}}
    report["inputs"] = {
        "preset": preset["name"],
        "dpd_calls": len(inputs.dpd),
        "vae_calls": len(inputs.vae),
        "lm_greedy_tokens": lm_tokens,
        "source": "eager streaming pipeline, 2 chunks: LM-generated tokens, sampler-trajectory latents",
    }
    log(f"  parity: bundle runs {len(inputs.dpd)} DPD and {len(inputs.vae)} VAE calls ({_since(t0)})")
    out_dpd = [bundle.dpd(*args) for args in inputs.dpd]
    out_vae = [bundle.vae_decode(z) for z in inputs.vae]
    for ref_name, ref in refs.items():
        log(f"  parity: against the {ref_name} reference, DPD, VAE, then LM ({lm_tokens} greedy tokens) ({_since(t0)})")
        comp = report["components"]
        if ref_name == "float":  # the recording ran this very model on these very inputs
            ref_dpd, ref_vae = inputs.dpd_out, inputs.vae_out
        else:
            ref_dpd = [ref.dpd(*args) for args in inputs.dpd]
            ref_vae = [ref.vae_decode(z) for z in inputs.vae]
        comp.setdefault("dpd", {})[ref_name] = compare(torch.stack(ref_dpd), torch.stack(out_dpd))
        comp.setdefault("vae_decoder", {})[ref_name] = compare(torch.stack(ref_vae), torch.stack(out_vae))
        comp.setdefault("lm", {})[ref_name] = lm_parity(ref, bundle, prefix_ids, lm_tokens)
    if "dpd_sampler" in manifest["components"] and hasattr(bundle, "dpd_sampler"):
        z, angles, target, tokens = inputs.first_window
        guidance = torch.tensor([float(sampler["guidance_scale"])])
        log(f"  parity: unrolled sampler ({_since(t0)})")
        out = bundle.dpd_sampler(z, angles, target, tokens, guidance)
        from ..models.diffusion import ddim_sample

        for ref_name, ref in refs.items():
            with torch.no_grad():
                want = ddim_sample(
                    ref.dpd, z, angles, target.bool(), tokens, sampler["steps"], guidance, spec.null_token
                )
            report["components"].setdefault("dpd_sampler", {})[ref_name] = compare(want, out)
        log(f"  parity: timing the unrolled sampler against T network calls ({_since(t0)})")
        report["sampler_timing"] = time_sampler_forms(bundle, inputs.first_window, sampler, spec.null_token, warm=False)
    if "vae_encoder" in manifest["components"]:
        # Realistic audio: what the eager pipeline decoded from the recording, cut to the encoder's length.
        n = manifest["components"]["vae_encoder"]["methods"]["forward"]["inputs"][0]["shape"][-1]
        audio = torch.cat(inputs.vae_out)[:n]
        if audio.numel() < n:  # a window shorter than the encoder's input: repeat it, still real audio
            audio = audio.repeat(-(-n // audio.numel()))[:n]
        log(f"  parity: VAE encoder on {n} samples of decoded audio ({_since(t0)})")
        out = bundle.vae_encode(audio[None])
        for ref_name, ref in refs.items():
            report["components"].setdefault("vae_encoder", {})[ref_name] = compare(ref.vae_encode(audio[None]), out)
    report["gate"] = gate(report, recipe)
    log(f"  parity: done ({_since(t0)})")
    return report


def time_sampler_forms(
    bundle: Backend, window: tuple, sampler: dict, null_token: int, reps: int = 5, warm: bool = True
) -> dict:
    """Median wall time of one window through the unrolled sampler artifact and through T ``dpd`` calls.

    Which is faster depends on the backend, the threads and the model, so the gate measures it on the
    exporting host and the bundle records the faster as ``sampler.preferred`` for the runtime to
    follow; ``benchmarks/sampler_vs_steps.py`` reports the same figures. Runs are interleaved so a
    load that comes and goes weighs on both forms alike. ``warm``: run each form once first (the gate
    passes False: its parity checks have just run both).
    """
    from ..models.diffusion import ddim_sample

    z, angles, target, tokens = window
    steps, scale = sampler["steps"], float(sampler["guidance_scale"])
    guidance = torch.tensor([scale])

    def unrolled() -> None:
        bundle.dpd_sampler(z, angles, target, tokens, guidance)

    def stepwise() -> None:
        ddim_sample(bundle.dpd, z, angles, target.bool(), tokens, steps, scale, null_token)

    forms = {"stepwise": stepwise, "unrolled": unrolled}
    if warm:
        for fn in forms.values():
            fn()  # the first call of a session pays for allocation and kernel selection
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(reps):
        for name, fn in forms.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    timing: dict = {f"{name}_ms": 1000 * statistics.median(ts) for name, ts in times.items()}
    timing.update(
        preferred="unrolled" if timing["unrolled_ms"] < timing["stepwise_ms"] else "stepwise",
        reps=reps,
        threads=torch.get_num_threads(),
        steps=steps,
        times_ms={name: [1000 * t for t in ts] for name, ts in times.items()},
    )
    return timing


def _since(t0: float) -> str:
    return f"{time.perf_counter() - t0:.0f} s"


def gate(report: dict, recipe: Recipe) -> dict:
    """Check the float-reference figures against the recipe's thresholds."""
    t = recipe.thresholds
    failures = []
    for comp, by_ref in report["components"].items():
        stats = by_ref["float"]
        if stats["nan_inf"]:
            failures.append(f"{comp}: {stats['nan_inf']} NaN/Inf values")
        if stats["snr_db"] < t.min_snr_db:
            failures.append(f"{comp}: SNR {stats['snr_db']:.1f} dB < {t.min_snr_db:.0f} dB")
        if comp == "lm":
            if t.lm_greedy_all_equal and stats["greedy_match"] < 1.0:
                failures.append(
                    f"lm: greedy tokens differ from position {stats['greedy_first_mismatch']} "
                    f"({stats['greedy_match'] * 100:.1f} % equal)"
                )
            if stats["teacher_forced_top1"] < t.lm_min_top1:
                failures.append(f"lm: teacher-forced top-1 {stats['teacher_forced_top1']:.3f} < {t.lm_min_top1}")
    return {"passed": not failures, "failures": failures, "thresholds": dataclasses.asdict(t)}


def format_parity(report: dict) -> str:
    lines = [
        f"parity ({report['target']}, recipe {report['recipe']}):",
        f"  {'component':<12} {'vs':<16} {'SNR dB':>8} {'PSNR dB':>8} {'cosine':>9} {'max abs':>10} {'NaN':>4}  LM",
    ]
    for comp, by_ref in report["components"].items():
        for ref_name, s in by_ref.items():
            lm = ""
            if comp == "lm":
                lm = f"greedy {s['greedy_match'] * 100:.0f} %, top-1 {s['teacher_forced_top1'] * 100:.0f} %"
            lines.append(
                f"  {comp:<12} {ref_name:<16} {s['snr_db']:8.1f} {s['psnr_db']:8.1f} {s['cosine']:9.6f} "
                f"{s['max_abs_error']:10.3g} {s['nan_inf']:4d}  {lm}"
            )
    g = report["gate"]
    lines.append("  gate: PASSED" if g["passed"] else "  gate: FAILED: " + "; ".join(g["failures"]))
    return "\n".join(lines)
