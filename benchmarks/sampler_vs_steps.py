"""Which is faster per backend: T separate DPD network calls (DDIM in Python) or the unrolled sampler graph?

Needs a bundle exported with the sampler artifact (the default; not with --no-sampler). Runs both on
the same sampler-trajectory inputs, checks they agree, and prints medians over --repeats.

    python benchmarks/sampler_vs_steps.py out/bench/edge/onnx-fp32 --repeats 5 --json out/bench/sampler.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from melody_edge.models.diffusion import ddim_sample
from melody_edge.runtime.open import open_bundle
from melody_edge.runtime.verify import reference_model, snr_db


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    backend, manifest = open_bundle(args.bundle)
    if "dpd_sampler" not in manifest["components"]:
        raise SystemExit(f"{args.bundle} has no dpd_sampler artifact; re-export without --no-sampler")
    from melody_edge.export.parity import record_inputs, time_sampler_forms

    model = reference_model(manifest)
    sampler = manifest["sampler"]
    steps, guidance = sampler["steps"], float(sampler["guidance_scale"])
    inputs = record_inputs(model, manifest["presets"][0]["tokens"], steps, guidance, chunks=1)
    z, angles, target, tokens = inputs.first_window
    null = manifest["stream"]["null_token"]

    # One call of each: the outputs to compare, and the warm-up for the timing.
    stepwise = ddim_sample(backend.dpd, z, angles, target.bool(), tokens, steps, guidance, null)
    unrolled = backend.dpd_sampler(z, angles, target, tokens, torch.tensor([guidance]))
    agree = snr_db(stepwise.numpy(), unrolled.numpy())
    timing = time_sampler_forms(backend, inputs.first_window, sampler, null, reps=args.repeats, warm=False)
    ratio = timing["stepwise_ms"] / timing["unrolled_ms"]
    print(f"{manifest['target']}/{manifest['recipe']['name']} ({manifest['model']['name']}), T = {steps}:")
    print(f"  stepwise ({steps} network calls + DDIM in Python): {timing['stepwise_ms']:8.1f} ms")
    print(f"  unrolled sampler graph (one call):          {timing['unrolled_ms']:8.1f} ms")
    print(f"  stepwise / unrolled = {ratio:.2f}; outputs agree to {agree:.1f} dB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"bundle": str(args.bundle), "ratio": ratio, "agreement_db": agree, **timing}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
