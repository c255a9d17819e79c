"""Would best-of-N sampling, scored by the LM itself, keep the prompt's key more often?

    python benchmarks/lm_rerank_probe.py --data out/data/demo --cache out/runs/demo/cache \
        --candidates 4 --seeds 2 --lm-guidance 3 --json out/lm_rerank_probe.json

For every held-out caption and seed, the checkpoint's LM samples ``--candidates`` DPD windows of semantic
tokens with classifier-free guidance, as the runtime draws them (candidate j with seed
``1000 * seed + j``). Each candidate is scored with no key oracle, only the LM's own two branches:
the pointwise mutual information of its tokens with the caption, sum over tokens of
``log p(token | caption) - log p(token | generic prompt)`` (the whole window, and its first chunk only,
which a streaming runtime could pick before rendering). The key of every candidate is read through the
token -> mean-chroma table of the training audio, as ``lm_key_probe.py`` does. The report compares the
first candidate (what the runtime gives now), the best- and worst-scored ones, the mean over all, and
the oracle (any candidate right: the ceiling of any selection rule).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from melody_edge.models.conditioning import SentenceEmbeddingTextEncoder, default_text_encoder_dir
from melody_edge.models.lm import SemanticLM
from melody_edge.models.lm_guidance import with_cache_batch
from melody_edge.models.melody import MeLoDy
from melody_edge.runtime.rng import STREAM_TOKENS, PortableRng
from melody_edge.runtime.sampling import sample_token
from melody_edge.training import features
from melody_edge.training.data import TRAIN, VALIDATION, AudioSet, read_index, split_clips
from melody_edge.training.evaluate import _key_ok
from melody_edge.training.metrics import key_from_tokens

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "melody_edge" / "checkpoints" / "demo"
SEED_STRIDE = 1000  # candidate j of seed s samples with the runtime's token stream of seed SEED_STRIDE * s + j


@torch.no_grad()
def sample_candidates(
    lm: SemanticLM,
    codes: torch.Tensor,
    null_codes: torch.Tensor,
    n: int,
    seeds: list[int],
    scale: float,
    temperature: float,
    top_k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One guided window per seed, all in one batch -> tokens [N, n], PMI per token [N, n].

    ``lm`` has a cache of 2N rows (``models.lm_guidance.with_cache_batch``): rows 0..N-1 read the caption's
    codes, N..2N-1 the generic prompt's. Sampling follows the runtime's guided LM (``u + scale * (c - u)``, one portable
    uniform per token), so candidate j is the stream the runtime gives for ``seeds[j]``.
    """
    k = len(seeds)
    p = lm.config.prefix_levels
    ids = torch.cat(
        [lm.prefix_ids(codes[None].long()).repeat(k, 1), lm.prefix_ids(null_codes[None].long()).repeat(k, 1)]
    )
    lm.reset_cache()
    logits = lm.prefill(ids, 0)[:, -1]
    rngs = [PortableRng(s, STREAM_TOKENS) for s in seeds]
    tokens = torch.zeros(k, n, dtype=torch.long)
    pmi = torch.zeros(k, n, dtype=torch.float64)
    for t in range(n):
        cond, free = logits[:k], logits[k:]
        guided = free + scale * (cond - free)
        gain = cond.log_softmax(-1) - free.log_softmax(-1)
        for j in range(k):
            tok = sample_token(guided[j].numpy(), temperature, top_k, float(rngs[j].uniform(1)[0]))
            tokens[j, t] = tok
            pmi[j, t] = float(gain[j, tok])
        if t + 1 < n:
            logits = lm.decode(tokens[:, t].repeat(2)[:, None], p + t)
    return tokens, pmi


def probe(checkpoint: Path, data: Path, cache: Path, candidates: int, seeds: int, scale: float | None) -> dict:
    model = MeLoDy.load(checkpoint)
    cfg, sr = model.config, model.config.sample_rate
    scale = cfg.lm_guidance_scale if scale is None else scale
    if not cfg.lm_null_codes:
        raise SystemExit(
            f"{checkpoint}: its LM has no unconditional branch (lm_null_codes); train it with --prompt-dropout"
        )
    index = read_index(data)
    train = AudioSet(split_clips(index, TRAIN), sr)
    val = AudioSet(split_clips(index, VALIDATION), sr)
    table = features.training_token_chroma(
        cache, train, model.tokenizer, Path(checkpoint) / "tokenizer", cfg.lm.vocab_size, print
    )
    null = torch.tensor(cfg.lm_null_codes)  # the generic prompt's codes, as the runtime's guided LM uses them
    encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())
    codes = model.conditioner.tokens_from_prompt([c.caption for c in val.clips], encoder)
    lm = with_cache_batch(model.lm, 2 * candidates)
    n, first_chunk = cfg.dpd.window_tokens, cfg.dpd.window_tokens // cfg.dpd.chunks
    rows, t0 = [], time.monotonic()
    for s in range(seeds):
        for i, clip in enumerate(val.clips):
            run_seeds = [SEED_STRIDE * s + j for j in range(candidates)]
            toks, pmi = sample_candidates(lm, codes[i], null, n, run_seeds, scale, cfg.temperature, cfg.top_k)
            hits = [_key_ok(key_from_tokens(t, table), clip.facts)[0] for t in toks]
            rows.append(
                {
                    "seed": s,
                    "clip": i,
                    "hits": hits,
                    "pmi": pmi.sum(1).tolist(),
                    "pmi_first_chunk": pmi[:, :first_chunk].sum(1).tolist(),
                }
            )
            if len(rows) % 10 == 0:
                print(
                    f"[lm_rerank_probe] {len(rows)}/{seeds * len(val.clips)} windows, {time.monotonic() - t0:.0f} s",
                    flush=True,
                )

    def hits_of(pick) -> int:
        return sum(r["hits"][pick(r)] for r in rows)

    return {
        "checkpoint": str(checkpoint),
        "candidates": candidates,
        "lm_guidance": scale,
        "windows": len(rows),
        "key_hits": {
            "first_candidate": hits_of(lambda r: 0),
            "best_pmi": hits_of(lambda r: int(np.argmax(r["pmi"]))),
            "best_pmi_first_chunk": hits_of(lambda r: int(np.argmax(r["pmi_first_chunk"]))),
            "worst_pmi": hits_of(lambda r: int(np.argmin(r["pmi"]))),
            "mean_over_candidates": float(np.mean([np.mean(r["hits"]) for r in rows]) * len(rows)),
            "oracle_any": sum(any(r["hits"]) for r in rows),
        },
        "wall_seconds": round(time.monotonic() - t0, 1),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="feature cache (a training run's RUN/cache)")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2, help="windows per caption (seeds 0..N-1)")
    ap.add_argument("--lm-guidance", type=float, help="LM guidance scale (default: the checkpoint's)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.candidates < 1 or args.candidates > SEED_STRIDE:
        raise SystemExit(f"--candidates must be in [1, {SEED_STRIDE}], got {args.candidates}")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = probe(args.checkpoint, args.data, args.cache, args.candidates, args.seeds, args.lm_guidance)
    w = report["windows"]
    print(f"\nkey of the LM's tokens, {w} windows, best of {args.candidates} (LM guidance {report['lm_guidance']:g})")
    for name, hits in report["key_hits"].items():
        print(f"  {name:<24} {hits / w:>6.1%} ({hits:.0f} / {w})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
