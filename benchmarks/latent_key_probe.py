"""Where does the VAE keep the key? Decode altered real latents and DPD samples, and read their key.

    python benchmarks/latent_key_probe.py --data out/data/demo --run out/runs/demo5 \
        --dpd out/runs/demo5/dpd/best --json out/latent_key_probe.json

On the held-out clips of the model card (distinct works, the first ``--clips``), each real clip is encoded
by the checkpoint's VAE and decoded again after one alteration, and the Krumhansl-Schmuckler estimator
reads the key of the result:

* ``real``: no alteration (the VAE's own reconstruction);
* ``token_average``: each token's 10 frames replaced by their mean;
* ``moving_average_5``: a 5-frame (20 ms) moving average along time;
* ``token_prior_mean`` / ``token_prior_sample``: every frame replaced by its token's mean latent over the
  training set (``fit_token_prior``), or a Gaussian draw around it;
* ``real_plus_half_prior_noise``: the real latent plus Gaussian noise of half the prior's deviation.

It also reports the share of latent energy in fast frame-to-frame structure (what the 5-frame moving
average removes) for the real latents and for latents the DPD samples from the real tokens (T and
guidance of the checkpoint), for the shipped DPD and for ``--dpd`` directories.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from melody_edge.models.checkpoint import load_component
from melody_edge.models.diffusion import ddim_sample
from melody_edge.models.dpd import DPDConfig, DualPathDiffusion
from melody_edge.models.melody import MeLoDy
from melody_edge.training.data import VALIDATION, AudioSet, read_index, split_clips
from melody_edge.training.evaluate import _distinct_works, _key_ok
from melody_edge.training.features import fit_token_prior
from melody_edge.training.metrics import estimate_key

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "melody_edge" / "checkpoints" / "demo"


def moving_average(z: torch.Tensor, width: int = 5) -> torch.Tensor:
    """[B, C, L] -> the same, averaged over ``width`` frames along time (zero-padded ends)."""
    k = torch.ones(1, 1, width) / width
    return torch.nn.functional.conv1d(z.reshape(-1, 1, z.shape[-1]), k, padding=width // 2).reshape(z.shape)


def fast_share(z: torch.Tensor, width: int = 5) -> float:
    """Share of the (mean-removed) latent energy that a ``width``-frame moving average removes."""
    edge = width - 1
    fast = (z - moving_average(z, width))[..., edge:-edge]
    centred = (z - z.mean(-1, keepdim=True))[..., edge:-edge]
    return float(fast.pow(2).sum() / centred.pow(2).sum())


def training_prior(run: Path, gain: float, vocab: int, frames_per_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The token prior of the run's cached training latents and tokens (``melody-edge train dpd`` builds them)."""
    cache = run / "cache"
    lat = sorted(cache.glob("latents-train-*.safetensors"))
    tok = sorted(cache.glob("tokens-train-*.safetensors"))
    if not lat or not tok:
        raise SystemExit(f"{cache}: no cached training latents/tokens; run `melody-edge train dpd --out {run}` first")
    z, t = load_file(str(lat[0])), load_file(str(tok[0]))
    keys = sorted(z)
    return fit_token_prior([z[k] * gain for k in keys], [t[k] for k in keys], vocab, frames_per_token)


@torch.no_grad()
def probe(checkpoint: Path, data: Path, run: Path, dpd_dirs: list[Path], clips: int, fast_clips: int) -> dict:
    model = MeLoDy.load(checkpoint)
    d, sr = model.config.dpd, model.config.sample_rate
    val = AudioSet(split_clips(read_index(data), VALIDATION), sr)
    chosen = _distinct_works(val.clips, clips)
    mean, var = training_prior(run, model.vae.config.latent_gain, d.token_vocab, d.frames_per_token)
    gen = torch.Generator().manual_seed(0)
    hits: dict[str, list[bool]] = {}
    dpds = {"shipped": model.dpd}
    for path in dpd_dirs:
        dpds[str(path)] = load_component(path, DPDConfig, DualPathDiffusion)[1].eval()
    fast: dict[str, list[float]] = {"real": [], **{name: [] for name in dpds}}
    for j, i in enumerate(chosen):
        audio = val.audio[i][None, : d.window_frames * model.vae.hop_length]
        z = model.vae.latent(audio)
        tokens = model.tokenizer.tokenize(audio)[0]
        n = min(tokens.numel(), z.shape[-1] // d.frames_per_token)
        tokens, z = tokens[:n], z[..., : n * d.frames_per_token]
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
            "real_plus_half_prior_noise": z + 0.5 * sd * torch.randn(sd.shape, generator=gen),
        }
        for name, latent in variants.items():
            decoded = model.vae.decode(latent)[0]
            hits.setdefault(name, []).append(_key_ok(estimate_key(decoded, sr), val.clips[i].facts)[0])
        if j < fast_clips and n >= d.window_tokens:
            fast["real"].append(fast_share(z[..., : d.window_frames]))
            noise = torch.randn(1, d.latent_channels, d.window_frames, generator=torch.Generator().manual_seed(0))
            for name, dpd in dpds.items():
                sample = ddim_sample(
                    dpd,
                    noise,
                    torch.full((1, d.window_frames), math.pi / 2),
                    torch.ones(1, d.window_frames, dtype=torch.bool),
                    tokens[None, : d.window_tokens],
                    model.config.steps,
                    model.config.guidance_scale,
                    d.null_token,
                )
                fast[name].append(fast_share(sample))
    return {
        "clips": len(chosen),
        "key_exact": {name: sum(h) for name, h in hits.items()},
        "fast_structure_share": {name: sum(v) / len(v) for name, v in fast.items() if v},
        "fast_structure_clips": len(fast["real"]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="training run whose cache holds the training latents")
    ap.add_argument("--dpd", type=Path, action="append", default=[], help="another DPD component directory")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--fast-clips", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = probe(args.checkpoint, args.data, args.run, args.dpd, args.clips, args.fast_clips)
    print(f"key exact of {report['clips']} held-out clips, decoded from altered latents:")
    for name, k in report["key_exact"].items():
        print(f"  {name:28s} {k:3d} / {report['clips']}")
    print(f"share of latent energy in fast (< 5-frame) structure, {report['fast_structure_clips']} windows:")
    for name, v in report["fast_structure_share"].items():
        print(f"  {name:28s} {v:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
