"""Time to first audio against the first chunk's sampler steps (``--first-steps``), and what it costs.

For each first-chunk step count, streams only the first chunk (2.5 s) from a bundle, over several seeds,
and reports the median time to first audio and how far that chunk moved from the T-step chunk of the
same seed: multi-resolution log-mel distance and mel SNR. For scale, the same distance between the
T-step first chunks of two different seeds (what changing the seed alone does) is printed beside it.

    python benchmarks/first_steps.py out/bundles/demo-xnnpack-int8 --seeds 5 --json out/bench/first_steps.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from melody_edge.runtime.open import open_bundle
from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator
from melody_edge.training.metrics import mel_snr_db, multires_log_mel_distance


def first_chunk(gen: StreamingGenerator, codes: list[int], settings: GenerationSettings) -> tuple[float, torch.Tensor]:
    """(seconds to the first audio, that audio [1, N])."""
    start = time.perf_counter()
    chunk = next(iter(gen.stream(codes, settings)))
    return time.perf_counter() - start, torch.from_numpy(chunk.audio)[None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-steps", type=int, nargs="+", default=None, help="default: 1 .. T")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    backend, manifest = open_bundle(args.bundle)
    sampler = manifest["sampler"]
    steps = int(sampler["steps"])
    candidates = sorted(set(args.first_steps or range(1, steps + 1)) | {steps})
    codes = manifest["presets"][0]["tokens"]
    sr = manifest["stream"]["sample_rate"]
    gen = StreamingGenerator(backend, backend.spec)

    def settings(seed: int, first: int) -> GenerationSettings:
        return GenerationSettings(
            seconds=2.5,
            steps=steps,
            guidance_scale=sampler["guidance_scale"],
            temperature=sampler["temperature"],
            top_k=sampler["top_k"],
            seed=seed,
            first_steps=first,
        )

    first_chunk(gen, codes, settings(0, steps))  # warm-up: first calls load and plan
    times: dict[int, list[float]] = {k: [] for k in candidates}
    audio: dict[int, list[torch.Tensor]] = {k: [] for k in candidates}
    for seed in range(args.seeds):
        for k in candidates:  # interleaved, so other load weighs on every row alike
            t, a = first_chunk(gen, codes, settings(seed, k))
            times[k].append(t)
            audio[k].append(a)

    reference = audio[steps]
    seed_pairs = [(reference[i], reference[i + 1]) for i in range(args.seeds - 1)]
    rows = []
    for k in candidates:
        rows.append(
            {
                "first_steps": k,
                "time_to_first_audio_s": statistics.median(times[k]),
                "log_mel_distance_to_T": statistics.mean(
                    multires_log_mel_distance(r, a, sr) for r, a in zip(reference, audio[k], strict=True)
                ),
                "mel_snr_db_to_T": statistics.mean(
                    min(mel_snr_db(r, a, sr), 99.0) for r, a in zip(reference, audio[k], strict=True)
                ),
            }
        )
    seed_distance = statistics.mean(multires_log_mel_distance(a, b, sr) for a, b in seed_pairs)
    seed_snr = statistics.mean(mel_snr_db(a, b, sr) for a, b in seed_pairs)

    what = f"{manifest['target']}/{manifest['recipe']['name']}, {manifest['model']['name']}"
    print(f"{args.bundle} ({what}), T = {steps}")
    print(f"  {'first steps':>11}  {'first audio s':>13}  {'log-mel dist to T':>17}  {'mel SNR to T dB':>15}")
    for r in rows:
        print(
            f"  {r['first_steps']:>11}  {r['time_to_first_audio_s']:>13.3f}  "
            f"{r['log_mel_distance_to_T']:>17.3f}  {r['mel_snr_db_to_T']:>15.1f}"
        )
    print(f"  two seeds at T (scale):            {seed_distance:>17.3f}  {seed_snr:>15.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "bundle": str(args.bundle),
            "target": manifest["target"],
            "recipe": manifest["recipe"]["name"],
            "model": manifest["model"]["name"],
            "steps": steps,
            "seeds": args.seeds,
            "rows": rows,
            "seed_to_seed": {"log_mel_distance": seed_distance, "mel_snr_db": seed_snr},
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
