"""Does the LM follow the prompt's key? Sample semantic tokens from held-out captions and read their key.

    python benchmarks/lm_key_probe.py --data out/data/demo --cache out/runs/demo/cache \
        --lm out/runs/new/lm/best --seeds 3 --json out/lm_key_probe.json

For every held-out caption (all of them, not only the model card's 24), each LM (the checkpoint's and
every ``--lm`` component directory, side by side on the same prompts and seeds) samples one DPD window of
semantic tokens from the caption's 12 codes, exactly as the streaming runtime draws them (same
temperature, top-k and portable random stream for a seed). The key of those tokens is read through the
token -> mean-chroma table of the training audio (``training.metrics.key_from_tokens``, as ``train
evaluate`` does), with no DPD or VAE in between: this isolates whether the LM passes the prompt's key on.
Beside it: the same read-out on the real held-out tokens (what a perfect LM could reach) and on each LM's
tokens from a shuffled caption (every clip with another clip's codes: what ignoring the prompt gives).
``prompt_only`` reads the key of the LM's first-token distribution itself (probabilities through the same
table), with no sampling: whether the prompt moves the LM's prediction toward the key at all.
``--temperature`` (repeatable) compares sampling temperatures; ``--lm-guidance`` (repeatable) samples with
classifier-free guidance against the generic prompt (``conditioning.GENERIC_PROMPT``) through the
runtime's guided LM (``models/lm_guidance.py``; useful for an LM trained with ``train lm --prompt-dropout``).
The training tokens come from the trainer's feature cache (``--cache``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from melody_edge.models.checkpoint import load_component
from melody_edge.models.conditioning import GENERIC_PROMPT, SentenceEmbeddingTextEncoder, default_text_encoder_dir
from melody_edge.models.lm import LMConfig, SemanticLM
from melody_edge.models.lm_guidance import streaming_lm
from melody_edge.models.melody import MeLoDy
from melody_edge.runtime.rng import STREAM_TOKENS, PortableRng
from melody_edge.runtime.sampling import sample_token
from melody_edge.training import features
from melody_edge.training.data import TRAIN, VALIDATION, AudioSet, read_index, split_clips
from melody_edge.training.evaluate import _key_ok
from melody_edge.training.metrics import key_from_chroma, key_from_tokens

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "melody_edge" / "checkpoints" / "demo"


@torch.no_grad()
def sample_window(
    lm: SemanticLM, codes: torch.Tensor, n: int, temperature: float, top_k: int, seed: int
) -> torch.Tensor:
    """codes [levels] -> n semantic tokens [n]: the runtime's first window (prefill, then one decode per token).

    ``lm`` is what the runtime streams with: the LM, or its guided form (``models/lm_guidance.streaming_lm``).
    """
    c = lm.config
    lm.reset_cache()
    logits = lm.prefill(lm.prefix_ids(codes[None].long()), 0)[0, -1]
    rng = PortableRng(seed, STREAM_TOKENS)
    out = []
    for i in range(n):
        tok = sample_token(logits.numpy(), temperature, top_k, float(rng.uniform(1)[0]))
        out.append(tok)
        if i + 1 < n:
            logits = lm.decode(torch.tensor([[tok]]), c.prefix_levels + i)[0]
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def prompt_only_key(lm: SemanticLM, codes: torch.Tensor, shuffled: torch.Tensor, table: torch.Tensor, facts) -> dict:
    """The key of the LM's prompt-only distribution (its first-token probabilities through the chroma table),
    own captions and shuffled: whether the prompt moves the LM's prediction toward the key at all, with no
    sampling noise."""
    out = {}
    for label, prompt in (("own_caption", codes), ("shuffled_caption", shuffled)):
        probs = lm(lm.prefix_ids(prompt.long()))[:, -1].softmax(-1)
        hits = [_key_ok(key_from_chroma(p @ table), f) for p, f in zip(probs, facts, strict=True)]
        out[label] = {"key": _mean(hits, 0), "same_tonic": _mean(hits, 1)}
    return out


def probe(
    checkpoint: Path,
    data: Path,
    cache: Path,
    lm_dirs: list[Path],
    seeds: int,
    temperatures: list[float] | None = None,
    guidances: list[float] | None = None,
) -> dict:
    model = MeLoDy.load(checkpoint)
    cfg, sr = model.config, model.config.sample_rate
    index = read_index(data)
    train = AudioSet(split_clips(index, TRAIN), sr)
    val = AudioSet(split_clips(index, VALIDATION), sr)
    table = features.training_token_chroma(
        cache, train, model.tokenizer, Path(checkpoint) / "tokenizer", cfg.lm.vocab_size, print
    )
    facts = [c.facts for c in val.clips]
    real = [_key_ok(key_from_tokens(model.tokenizer.tokenize(a[None])[0], table), f) for a, f in zip(val.audio, facts)]
    encoder = SentenceEmbeddingTextEncoder(default_text_encoder_dir())
    codes = model.conditioner.tokens_from_prompt([c.caption for c in val.clips], encoder)
    null_codes = tuple(model.conditioner.tokens_from_prompt([GENERIC_PROMPT], encoder)[0].tolist())
    shuffled = codes.roll(len(codes) // 2, dims=0)
    lms = {"checkpoint": model.lm}
    for path in lm_dirs:
        lms[str(path)] = load_component(path, LMConfig, SemanticLM)[1].eval()
    n = cfg.dpd.window_tokens
    temperatures = temperatures or [cfg.temperature]
    report: dict = {
        "checkpoint": str(checkpoint),
        "captions": len(val.clips),
        "seeds": seeds,
        "tokens_per_sample": n,
        "checkpoint_temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "real_tokens": {"key": _mean(real, 0), "same_tonic": _mean(real, 1)},
        "chance": {"key": 1 / 24, "same_tonic": 1 / 12},
        "lms": [],
    }
    guidances = guidances or [1.0]
    for name, lm in lms.items():
        prompt_only = prompt_only_key(lm, codes, shuffled, table, facts)  # no sampling: once per LM
        for temp, scale in itertools.product(temperatures, guidances):
            t0 = time.monotonic()
            runner = streaming_lm(lm, null_codes, scale)  # the runtime's guided LM (cache batch 2) unless scale 1
            row: dict = {"lm": name, "temperature": temp, "guidance": scale, "prompt_only": prompt_only}
            for label, prompt in (("own_caption", codes), ("shuffled_caption", shuffled)):
                hits = [
                    _key_ok(
                        key_from_tokens(sample_window(runner, prompt[i], n, temp, cfg.top_k, s), table),
                        f,
                    )
                    for s in range(seeds)
                    for i, f in enumerate(facts)
                ]
                row[label] = {"key": _mean(hits, 0), "same_tonic": _mean(hits, 1), "samples": len(hits)}
            row["wall_seconds"] = round(time.monotonic() - t0, 1)
            report["lms"].append(row)
            print(f"[lm_key_probe] {row}", flush=True)
    return report


def _mean(hits: list[tuple[bool, bool]], k: int) -> float:
    return sum(h[k] for h in hits) / max(len(hits), 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="feature cache (a training run's RUN/cache)")
    ap.add_argument("--lm", type=Path, action="append", default=[], help="another LM component directory")
    ap.add_argument("--seeds", type=int, default=1, help="token streams per caption (seeds 0..N-1)")
    ap.add_argument(
        "--temperature", type=float, action="append", help="sampling temperature (repeatable; default: checkpoint's)"
    )
    ap.add_argument(
        "--lm-guidance",
        type=float,
        action="append",
        help="classifier-free guidance on the LM against the generic prompt (repeatable; default 1 = none). "
        "The checkpoint's own lm_guidance_scale is not applied: list it to measure it",
    )
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = probe(args.checkpoint, args.data, args.cache, args.lm, args.seeds, args.temperature, args.lm_guidance)
    print(
        f"\nkey accuracy (same tonic in brackets); sampled = {report['tokens_per_sample']} tokens per caption and seed"
    )
    head = f"{'LM':<32} {'temp':>5} {'cfg':>4} {'sampled own':>13} {'shuffled':>13}"
    head += f" {'prompt-only own':>16} {'shuffled':>13}"
    print(head)
    for row in report["lms"]:
        cells = []
        for part in (row, row["prompt_only"]):
            for label in ("own_caption", "shuffled_caption"):
                cells.append(f"{part[label]['key']:>6.1%} ({part[label]['same_tonic']:>4.0%})")
        print(
            f"{row['lm'][-32:]:<32} {row['temperature']:>5.2f} {row['guidance']:>4.1f} {cells[0]:>13} {cells[1]:>13} "
            f"{cells[2]:>16} {cells[3]:>13}"
        )
    real = report["real_tokens"]
    print(f"{'real held-out tokens':<32} {'':>5} {real['key']:>6.1%} ({real['same_tonic']:>4.0%})   chance 4.2 % (8 %)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
