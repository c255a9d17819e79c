"""Streaming benchmark: bundles, the eager reference and the MusicGen-small peer in one run.

    python benchmarks/streaming.py out/bench/edge/onnx-fp32 out/bench/edge/onnx-int8 \
        out/bench/edge-xnn/executorch-xnnpack-fp32 --seconds 10 --threads 2 \
        --json out/bench/streaming_edge.json --plot out/bench/streaming_edge.png

Every run is a fresh spawned process with the same thread count (``melody-edge bench`` does the
bundles and the eager reference; the peer runs through ``benchmarks/peer_musicgen.py``'s code). The
script also measures this machine's fp32 GEMM rate with the same threads and prints the FLOP lower
bound on the real-time factor of the model (its FLOPs per second of audio / the GEMM rate), so a
missed target is explained by arithmetic, not guessed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from melody_edge.runtime.bench import bench, format_bench, plot_bench
from melody_edge.runtime.manifest import load_manifest


def gemm_gflops(threads: int | None, n: int = 1024, repeats: int = 20) -> float:
    """Median fp32 GEMM rate (GFLOP/s) of an n x n x n matmul, the best case for any network here."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9


def _peer_child(queue, seconds: float, threads: int | None) -> None:
    try:
        import peer_musicgen

        queue.put(("ok", peer_musicgen.run(seconds, threads)))
    except BaseException as exc:  # the parent reports it next to the other runs
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def run_peer(seconds: float, threads: int | None) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peer_child, args=(queue, seconds, threads))
    proc.start()
    status, payload = queue.get(timeout=7200)
    proc.join(timeout=10)
    return payload if status == "ok" else {"name": "MusicGen-small decoder", "error": payload}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-peer", action="store_true", help="leave out the MusicGen-small peer")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)

    from melody_edge.info import model_info
    from melody_edge.models.melody import MelodyConfig

    result = bench(args.bundles, seconds=args.seconds, threads=args.threads, log=lambda m: print(m, flush=True))
    print(format_bench(result))

    rate = gemm_gflops(args.threads)
    manifest = load_manifest(args.bundles[0])
    config = MelodyConfig.from_dict(manifest["model"]["config"])
    info = model_info(config)
    per_s = info["flops_per_audio_second"]["total"] / 1e9
    result["gemm_gflops"] = rate
    result["model_gflop_per_audio_s"] = per_s
    result["rtf_flop_floor"] = per_s / rate
    print(
        f"\nGEMM rate ({args.threads or 'all'} threads, 1024^3 fp32, median of 20): {rate:.0f} GFLOP/s; "
        f"model: {per_s:.1f} GFLOP per second of audio (T = {config.steps}) -> RTF floor {per_s / rate:.3f} "
        "at 100 % of the GEMM rate"
    )

    if not args.no_peer:
        print(f"running the MusicGen-small peer ({args.seconds:g} s) ...", flush=True)
        peer = run_peer(args.seconds, args.threads)
        result["peer"] = peer
        if "error" in peer:
            print(f"peer failed: {peer['error']}")
        else:
            best = min(r["real_time_factor"] for r in result["runs"])
            print(
                f"{peer['name']}: {peer['params'] / 1e6:.0f}M params, {peer['steps']} sequential passes, "
                f"RTF {peer['real_time_factor']:.2f} (best MeLoDy run RTF {best:.3f}, "
                f"{peer['real_time_factor'] / best:.1f}x faster)"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot_bench(result, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
