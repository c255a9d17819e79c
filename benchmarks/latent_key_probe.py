"""Where does the VAE keep the key? Decode altered real latents and DPD samples, and read their key.

    python benchmarks/latent_key_probe.py --data out/data/demo --cache out/runs/demo5/cache \
        --dpd out/runs/demo5/dpd/best --json out/latent_key_probe.json

On the held-out clips of the model card (distinct works, the first ``--clips``), each real clip is encoded
by the checkpoint's VAE and decoded again after one alteration, and the Krumhansl-Schmuckler estimator
reads the key of the result:

* ``real``: no alteration (the VAE's own reconstruction);
* ``token_average``: each token's 10 frames replaced by their mean;
* ``moving_average_5``: a 5-frame (20 ms) moving average along time;
* ``token_prior_mean`` / ``token_prior_sample``: every frame replaced by its token's mean latent over the
  training set (``fit_token_prior``), or a Gaussian draw around it;
* ``token_exemplar``: each token's frames replaced by those of one random training occurrence of the same
  token (``token_exemplars``): real sub-token structure chosen by the token id alone;
* ``real_plus_half_prior_noise``: the real latent plus Gaussian noise of half the prior's deviation.

For the checkpoint's DPD, the token prior alone (its closed-form velocity, no network) and each ``--dpd``
directory it also renders every clip from its real semantic
tokens (``training.evaluate.sample_from_tokens``: the checkpoint's T and guidance, seed 0, as ``train evaluate``
does) and reads the key, and it reports the share of latent energy in fast frame-to-frame structure (what
the 5-frame moving average removes) of the real latents and of those samples (first ``--fast-clips``).
The training set's tokens and latents come from the trainer's feature cache (``--cache``), keyed by the
checkpoint's tokenizer and VAE weights, and are computed there when absent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from melody_edge.models.checkpoint import load_component
from melody_edge.models.dpd import DPDConfig, DualPathDiffusion
from melody_edge.models.melody import MeLoDy
from melody_edge.models.vae_losses import latent_fast_share, moving_average
from melody_edge.training import features
from melody_edge.training.data import TRAIN, VALIDATION, AudioSet, read_index, split_clips
from melody_edge.training.evaluate import _distinct_works, _key_ok, sample_from_tokens
from melody_edge.training.metrics import dpd_fast_slow_error, dpd_loss_by_angle, dpd_token_use, estimate_key
from melody_edge.training.train_seq import window_starts

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "melody_edge" / "checkpoints" / "demo"


def training_features(model: MeLoDy, checkpoint: Path, clips: list, cache: Path) -> tuple[list, list]:
    """The training split's tokens and latents, from the trainer's cache (computed there when absent)."""
    sr = model.config.sample_rate
    train = AudioSet(split_clips(clips, TRAIN), sr)
    tokens = features.semantic_tokens(
        cache, TRAIN, train, model.tokenizer, features.weights_digest(checkpoint / "tokenizer"), print
    )
    latents = features.vae_latents(cache, TRAIN, train, model.vae, features.weights_digest(checkpoint / "vae"), print)
    return tokens, latents


def token_exemplars(latents: list, tokens: list, vocab: int, frames_per_token: int, seed: int = 0) -> torch.Tensor:
    """[vocab + 1, C, frames_per_token]: for each token, the latent frames of one random training occurrence
    (zeros for tokens never seen). Decoding a clip's tokens through this table renders real sub-token
    structure that only the token id chose: how much of the key the tokens alone can pass to the VAE."""
    where: dict[int, list[tuple[int, int]]] = {}
    for clip, (tok, z) in enumerate(zip(tokens, latents, strict=True)):
        for pos in range(min(tok.numel(), z.shape[-1] // frames_per_token)):
            where.setdefault(int(tok[pos]), []).append((clip, pos))
    gen = torch.Generator().manual_seed(seed)
    table = torch.zeros(vocab + 1, latents[0].shape[0], frames_per_token)
    for tok_id, places in sorted(where.items()):
        clip, pos = places[int(torch.randint(len(places), (1,), generator=gen))]
        table[tok_id] = latents[clip][:, pos * frames_per_token : (pos + 1) * frames_per_token]
    return table


@torch.no_grad()
def probe(
    checkpoint: Path,
    data: Path,
    cache: Path,
    dpd_dirs: list[Path],
    clips: int,
    fast_clips: int,
    exemplar_draws: int = 1,
) -> dict:
    model = MeLoDy.load(checkpoint)
    d, sr = model.config.dpd, model.config.sample_rate
    index = read_index(data)
    val = AudioSet(split_clips(index, VALIDATION), sr)
    chosen = _distinct_works(val.clips, clips)
    train_tokens, train_latents = training_features(model, checkpoint, index, cache)
    mean, var = features.fit_token_prior(train_latents, train_tokens, d.token_vocab, d.frames_per_token)
    # One random occurrence per token is a noisy pick: each further draw (seed) renders every clip again.
    exemplars = [
        token_exemplars(train_latents, train_tokens, d.token_vocab, d.frames_per_token, seed=s)
        for s in range(exemplar_draws)
    ]
    exemplar_hits = [0] * exemplar_draws
    gen = torch.Generator().manual_seed(0)
    hits: dict[str, list[bool]] = {}
    # The token prior with no network (its closed-form velocity alone): what a per-token table can render.
    prior_only = DualPathDiffusion(d.replace(token_prior=True)).eval()
    prior_only.set_token_prior(mean, var)
    for layer in (prior_only.out_proj, prior_only.prior_proj):
        layer.weight.zero_()
        layer.bias.zero_()
    dpds = {"shipped": model.dpd, "token prior alone": prior_only}
    for path in dpd_dirs:
        dpds[str(path)] = load_component(path, DPDConfig, DualPathDiffusion)[1].eval()
    fast: dict[str, list[float]] = {"real": [], **{name: [] for name in dpds}}
    rendered: dict[str, list[bool]] = {name: [] for name in dpds}
    for j, i in enumerate(chosen):
        facts = val.clips[i].facts
        clip_tokens = model.tokenizer.tokenize(val.audio[i][None])[0]  # the whole clip's, as train evaluate
        for name, dpd in dpds.items():
            sample = sample_from_tokens(model, dpd, clip_tokens)
            rendered[name].append(_key_ok(estimate_key(model.vae.decode(sample)[0], sr), facts)[0])
            if j < fast_clips:
                fast[name].append(float(latent_fast_share(sample)))
        audio = val.audio[i][None, : d.window_frames * model.vae.hop_length]
        z = model.vae.latent(audio)
        tokens = model.tokenizer.tokenize(audio)[0]
        n = min(tokens.numel(), z.shape[-1] // d.frames_per_token)
        tokens, z = tokens[:n], z[..., : n * d.frames_per_token]
        if j < fast_clips:
            fast["real"].append(float(latent_fast_share(z)))
        grouped = z.view(1, d.latent_channels, n, d.frames_per_token)

        def per_token(t: torch.Tensor) -> torch.Tensor:  # [n, C] -> [1, C, n * frames_per_token]
            return t.T[None, :, :, None].expand(1, -1, -1, d.frames_per_token).reshape(1, d.latent_channels, -1)

        sd = per_token(var[tokens].sqrt())
        variants = {
            "real": z,
            "token_average": grouped.mean(-1, keepdim=True).expand_as(grouped).reshape(z.shape),
            "moving_average_5": moving_average(z),
            "token_prior_mean": per_token(mean[tokens]),
            "token_prior_sample": per_token(mean[tokens]) + sd * torch.randn(sd.shape, generator=gen),
            "token_exemplar": exemplars[0][tokens].permute(1, 0, 2).reshape(1, d.latent_channels, -1),
            "real_plus_half_prior_noise": z + 0.5 * sd * torch.randn(sd.shape, generator=gen),
        }
        for name, latent in variants.items():
            decoded = model.vae.decode(latent)[0]
            hits.setdefault(name, []).append(_key_ok(estimate_key(decoded, sr), facts)[0])
        exemplar_hits[0] += hits["token_exemplar"][-1]
        for s, table in enumerate(exemplars[1:], start=1):
            latent = table[tokens].permute(1, 0, 2).reshape(1, d.latent_channels, -1)
            exemplar_hits[s] += _key_ok(estimate_key(model.vae.decode(latent)[0], sr), facts)[0]
    # The card's DPD figures (train evaluate's 16 validation windows) for every DPD compared here.
    val_tokens = features.semantic_tokens(
        cache, VALIDATION, val, model.tokenizer, features.weights_digest(checkpoint / "tokenizer"), print
    )
    val_latents = features.vae_latents(
        cache, VALIDATION, val, model.vae, features.weights_digest(checkpoint / "vae"), print
    )
    picks = window_starts([t.numel() for t in val_tokens], d.window_tokens)[:16]
    f = d.frames_per_token
    z0 = torch.stack([val_latents[i][:, s * f : s * f + d.window_frames] for i, s in picks])
    windows = torch.stack([val_tokens[i][s : s + d.window_tokens] for i, s in picks])
    card = {
        name: {
            "mse_by_angle": dpd_loss_by_angle(dpd, z0, windows),
            "token_use": dpd_token_use(dpd, z0, windows),
            "fast_slow_error": dpd_fast_slow_error(dpd, z0, windows),
        }
        for name, dpd in dpds.items()
    }
    return {
        "dpd_card_windows": len(picks),
        "dpd": card,
        "clips": len(chosen),
        "key_exact": {name: sum(h) for name, h in hits.items()},
        "key_exact_token_exemplar_per_draw": exemplar_hits,
        "key_exact_rendered_from_real_tokens": {name: sum(h) for name, h in rendered.items()},
        "fast_structure_share": {name: sum(v) / len(v) for name, v in fast.items() if v},
        "fast_structure_clips": len(fast["real"]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="feature cache (a training run's RUN/cache)")
    ap.add_argument("--dpd", type=Path, action="append", default=[], help="another DPD component directory")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--fast-clips", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--exemplar-draws", type=int, default=1, help="token_exemplar tables drawn (seeds 0..N-1)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.exemplar_draws < 1:
        ap.error("--exemplar-draws must be >= 1")
    report = probe(args.checkpoint, args.data, args.cache, args.dpd, args.clips, args.fast_clips, args.exemplar_draws)
    print(f"key exact of {report['clips']} held-out clips, decoded from altered latents:")
    for name, k in report["key_exact"].items():
        print(f"  {name:28s} {k:3d} / {report['clips']}")
    draws = report["key_exact_token_exemplar_per_draw"]
    print(f"  token_exemplar per draw       {draws} (mean {sum(draws) / len(draws):.1f})")
    print("key exact of the same clips rendered from their real semantic tokens (DPD + VAE):")
    for name, k in report["key_exact_rendered_from_real_tokens"].items():
        print(f"  {name:28s} {k:3d} / {report['clips']}")
    print(f"DPD on the card's {report['dpd_card_windows']} validation windows (velocity MSE; relative MSE near noise):")
    for name, r in report["dpd"].items():
        u = r["token_use"]
        print(
            f"  {name:28s} mean {r['mse_by_angle']['mean']:.3f}; real / null / other tokens "
            f"{u['real_tokens_relative_mse']:.3f} / {u['null_tokens_relative_mse']:.3f} / "
            f"{u['other_windows_tokens_relative_mse']:.3f}"
        )
    print("clean-latent error of the DPD's estimate, fast / slow part (1.0 = recovers none), by angle:")
    for name, r in report["dpd"].items():
        cells = "  ".join(f"{k[6:]} {v['fast']:.2f}/{v['slow']:.2f}" for k, v in r["fast_slow_error"].items())
        print(f"  {name:28s} {cells}")
    print(f"share of latent energy in fast (< 5-frame) structure, {report['fast_structure_clips']} windows:")
    for name, v in report["fast_structure_share"].items():
        print(f"  {name:28s} {v:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
