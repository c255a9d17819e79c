"""Time the `tiny` config's eager streaming pipeline for 10 s of audio (issue 2: well under 2 s on 2 cores).

python benchmarks/tiny_eager_time.py --threads 2 --repeats 4
"""

from __future__ import annotations

import argparse
import time

import torch

from melody_edge.models.melody import build_model, preset
from melody_edge.runtime.eager import EagerBackend
from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_model(preset("tiny"))
    backend = EagerBackend(model)
    gen = StreamingGenerator(backend, backend.spec)
    c = model.config
    settings = GenerationSettings(seconds=args.seconds, steps=c.steps, guidance_scale=c.guidance_scale, seed=0)
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            samples = sum(ch.audio.size for ch in gen.stream(list(range(12)), settings))
            times.append(time.perf_counter() - t0)
    print(
        f"tiny eager, {samples / c.sample_rate:g} s of audio, {args.threads} threads: "
        + ", ".join(f"{t:.2f} s" for t in times)
    )


if __name__ == "__main__":
    main()
