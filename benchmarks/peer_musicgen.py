"""Peer: an autoregressive codec-token generator of MusicGen-small's architecture and size.

Built from MusicGen-small's published decoder config (24 layers, width 1024, 16 heads, FFN 4096,
4 codebooks of 2048 codes at 50 Hz) with random weights through ``transformers`` (no download), it
generates the same duration as our runs with its KV cache, on the same machine, in the same process
settings. The T5 text encoder and the EnCodec decoder are not timed (MusicGen would add both), so
this is a lower bound on MusicGen-small's cost.

    python benchmarks/peer_musicgen.py --seconds 10 --threads 2 --json out/bench/musicgen.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

FRAME_RATE = 50  # EnCodec 32 kHz frames per second
CODEBOOKS = 4


def build_decoder():
    try:
        from transformers import MusicgenDecoderConfig, MusicgenForCausalLM
    except ImportError as exc:  # optional extra
        raise SystemExit(f"the MusicGen peer needs transformers (pip install -e '.[text]'): {exc}") from exc
    config = MusicgenDecoderConfig(
        vocab_size=2048,
        max_position_embeddings=2048,
        num_hidden_layers=24,
        ffn_dim=4096,
        num_attention_heads=16,
        hidden_size=1024,
        num_codebooks=CODEBOOKS,
        pad_token_id=2048,
        bos_token_id=2048,
    )
    torch.manual_seed(0)
    return MusicgenForCausalLM(config).eval()


def run(seconds: float, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    model = build_decoder()
    params = sum(p.numel() for p in model.parameters())
    # The delay pattern adds codebooks - 1 steps; one step emits one frame of every codebook.
    steps = round(seconds * FRAME_RATE) + CODEBOOKS - 1
    ids = torch.full((CODEBOOKS, 1), 2048, dtype=torch.long)  # [B * codebooks, 1] BOS
    latencies = []
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        past = out.past_key_values
        latencies.append(time.perf_counter() - t0)
        for _ in range(steps - 1):
            t = time.perf_counter()
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [codebooks, 1]
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            latencies.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
    return {
        "name": "MusicGen-small decoder (random weights)",
        "params": params,
        "seconds": seconds,
        "steps": steps,
        "network_passes": steps,
        "wall_s": wall,
        "real_time_factor": wall / seconds,
        "step_p50_s": sorted(latencies)[len(latencies) // 2],
        "threads": torch.get_num_threads(),
        "note": "decoder only: T5 encoder and EnCodec decoder not timed (lower bound)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    result = run(args.seconds, args.threads)
    print(
        f"{result['name']}: {result['params'] / 1e6:.0f}M params, {result['steps']} steps for {args.seconds:g} s, "
        f"wall {result['wall_s']:.1f} s, RTF {result['real_time_factor']:.2f}, step p50 {result['step_p50_s']:.3f} s"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
