"""Each component trains on the tiny config, lowers its loss, resumes from its checkpoint."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from melody_edge.models.checkpoint import CheckpointError, load_weights
from melody_edge.models.melody import MeLoDy
from melody_edge.training import pipeline
from melody_edge.training.data import DataError, read_index
from melody_edge.training.loop import TrainOptions, primary_metric, read_log
from melody_edge.training.state import has_training_state


@pytest.fixture(scope="module")
def fitted_run(toy_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    pipeline.fit_tokenizer(toy_data, "tiny", run, log=lambda m: None)
    pipeline.fit_conditioner(toy_data, "tiny", run, log=lambda m: None)
    return run


def _train_losses(run: Path, component: str, metric: str) -> list[float]:
    return [r["value"] for r in read_log(run / component) if r["split"] == "train" and r["metric"] == metric]


def test_tokenizer_and_conditioner_fit(fitted_run):
    tok = json.loads((fitted_run / "tokenizer" / "fit.json").read_text())
    assert tok["kmeans_mse"][-1] < tok["kmeans_mse"][0]
    cond = json.loads((fitted_run / "conditioner" / "fit.json").read_text())
    errors = cond["residual_error_per_level"]
    assert errors[-1] <= errors[0] < 1.0


@pytest.mark.parametrize(
    ("component", "metric", "steps"),
    [("vae", "mrstft", 40), ("dpd", "loss", 40), ("lm", "ce", 40)],
)
def test_component_lowers_loss_and_resumes(toy_data, fitted_run, tmp_path, component, metric, steps):
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    config = pipeline.resolve_config("tiny")
    if component == "dpd":
        pipeline.train_vae(toy_data, "tiny", run, pipeline.default_options("tiny", "vae", steps=4), log=lambda m: None)
        # A 4-step VAE's latents are nearly constant, so the token prior's closed form already sits at the
        # Bayes error (loss ~1e-4) and leaves nothing to lower: the loop is checked on the network alone
        # (tests/models/test_dpd.py checks the prior).
        config = config.replace(dpd=config.dpd.replace(token_prior=False))
    fn = {"vae": pipeline.train_vae, "dpd": pipeline.train_dpd, "lm": pipeline.train_lm}[component]
    opts = dict(steps=steps, log_every=5, warmup_steps=2, val_every=100, save_every=100)
    first = fn(toy_data, config, run, pipeline.default_options("tiny", component, **opts), log=lambda m: None)
    assert first.finished and has_training_state(run / component)
    assert (run / component / "best" / "model.safetensors").is_file()
    losses = _train_losses(run, component, metric)
    assert sum(losses[-2:]) / 2 < losses[0], losses
    # Resume: a longer run continues from the saved step instead of starting again.
    logs: list[str] = []
    more = fn(
        toy_data,
        config,
        run,
        pipeline.default_options("tiny", component, **{**opts, "steps": steps + 5}),
        log=logs.append,
    )
    assert more.step == steps + 5
    assert any(f"resuming from {run / component} at step {steps}" in m for m in logs)


def test_resumed_run_equals_uninterrupted(toy_data, fitted_run, tmp_path):
    """Batches and noise are a function of (seed, step): stopping and resuming changes nothing."""
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        shutil.copytree(fitted_run, r)
    base = dict(log_every=1, warmup_steps=2, val_every=100, save_every=100)
    pipeline.train_lm(toy_data, "tiny", a, pipeline.default_options("tiny", "lm", steps=6, **base), log=lambda m: None)
    pipeline.train_lm(toy_data, "tiny", b, pipeline.default_options("tiny", "lm", steps=3, **base), log=lambda m: None)
    pipeline.train_lm(toy_data, "tiny", b, pipeline.default_options("tiny", "lm", steps=6, **base), log=lambda m: None)
    # Same LR schedule requires the same total steps: compare the steps after the resume point.
    la = [r["value"] for r in read_log(a / "lm") if r["metric"] == "ce" and r["split"] == "train"]
    lb = [r["value"] for r in read_log(b / "lm") if r["metric"] == "ce" and r["split"] == "train"]
    assert la[:3] == pytest.approx(lb[:3], rel=1e-5)


def test_train_all_assembles_a_loadable_checkpoint(toy_data, tmp_path):
    over = {n: {"steps": 2, "warmup_steps": 1} for n in ("vae", "dpd", "lm")}
    result = pipeline.train_all(toy_data, "tiny", tmp_path / "run", over, log=lambda m: None)
    model = MeLoDy.load(result.checkpoint)
    assert model.config.name == "tiny"
    weights = (result.checkpoint / "lm" / "model.safetensors").stat().st_size
    assert weights < 4 * sum(p.numel() for p in model.lm.parameters())  # fp16 on disk
    # The CLI assembles the same run again, here in fp32, for a run continued by hand.
    from click.testing import CliRunner

    from melody_edge.cli import main

    again = tmp_path / "fp32"
    args = ["train", "assemble", "--config", "tiny", "--out", str(tmp_path / "run"), "--to", str(again), "--fp32"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and str(again) in res.output, res.output
    assert (again / "lm" / "model.safetensors").stat().st_size > 4 * sum(p.numel() for p in model.lm.parameters())
    res = CliRunner().invoke(main, ["train", "assemble", "--config", "edge", "--out", str(tmp_path / "run")])
    assert res.exit_code != 0 and "different" in res.output, res.output


def test_a_run_trains_on_a_learned_encoders_tokens(toy_data, tiny_audio_encoder, tmp_path):
    from click.testing import CliRunner

    from melody_edge.cli import main
    from melody_edge.models.encoder_tokenizer import EncoderSemanticTokenizer

    run = tmp_path / "run"
    base = ["train", "tokenizer", "--data", str(toy_data), "--config", "tiny", "--out", str(run)]
    res = CliRunner().invoke(main, [*base, "--encoder", str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "not a model directory" in res.output and "--encoder DIR" in res.output
    res = CliRunner().invoke(main, [*base, "--encoder", str(tiny_audio_encoder), "--encoder-layer", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["kind"] == "encoder" and report["kmeans_mse"][-1] < report["kmeans_mse"][0]
    # The later stages take the run's tokenizer with no extra flag; the DPD embeds its 32-wide centroids.
    over = {n: {"steps": 2, "warmup_steps": 1} for n in ("vae", "dpd", "lm")}
    result = pipeline.train_all(toy_data, "tiny", run, over, log=lambda m: None)
    model = MeLoDy.load(result.checkpoint)  # also checks the DPD holds this tokenizer's centroids
    assert isinstance(model.tokenizer, EncoderSemanticTokenizer)
    assert model.config.dpd.token_feature_dim == 32 and model.config.tokenizer.layer == 2


def test_missing_prerequisite_names_the_command(toy_data, tmp_path):
    with pytest.raises(CheckpointError, match="melody-edge train tokenizer"):
        pipeline.train_dpd(toy_data, "tiny", tmp_path, pipeline.default_options("tiny", "dpd"), log=lambda m: None)


def test_config_mismatch_is_refused(toy_data, fitted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    pipeline.train_lm(toy_data, "tiny", run, pipeline.default_options("tiny", "lm", steps=1), log=lambda m: None)
    with pytest.raises(CheckpointError, match="different lm config"):
        pipeline.train_lm(toy_data, "demo", run, pipeline.default_options("demo", "lm", steps=1), log=lambda m: None)


def test_bad_data_errors(tmp_path, toy_data):
    with pytest.raises(DataError, match="melody-edge data synth"):
        read_index(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(toy_data, broken)
    with (broken / "index.jsonl").open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(DataError, match=r"index.jsonl:7: not valid JSON"):
        read_index(broken)


def test_dpd_best_is_measured_again_when_the_vae_changes(toy_data, fitted_run, tmp_path):
    """A best validation figure on the old VAE's latents must not keep the old DPD weights "best"."""
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    quiet = dict(warmup_steps=2, log_every=2, val_every=4, save_every=4)
    pipeline.train_vae(toy_data, "tiny", run, pipeline.default_options("tiny", "vae", steps=4), log=lambda m: None)
    pipeline.train_dpd(
        toy_data, "tiny", run, pipeline.default_options("tiny", "dpd", steps=4, **quiet), log=lambda m: None
    )
    first = json.loads((run / "dpd" / "train_state" / "state.json").read_text())["best"]
    assert first["step"] == 4 and first["inputs"].startswith("vae ")
    # Same latents: resuming keeps the record. A VAE trained further: the record is measured again.
    pipeline.train_vae(toy_data, "tiny", run, pipeline.default_options("tiny", "vae", steps=6), log=lambda m: None)
    logs: list[str] = []
    opts = pipeline.default_options("tiny", "dpd", steps=8, **quiet)
    pipeline.train_dpd(toy_data, "tiny", run, opts, log=logs.append)
    assert any("validation inputs changed since step 4" in m for m in logs), logs
    best = json.loads((run / "dpd" / "train_state" / "state.json").read_text())["best"]
    assert best["step"] == 8 and best["inputs"] != first["inputs"]


def test_dpd_learns_the_latents_of_the_vae_that_ships(toy_data, fitted_run, tmp_path):
    """assemble ships RUN/vae/best; the DPD's latents must come from those weights, not the last ones."""
    from melody_edge.models.checkpoint import load_component, save_component
    from melody_edge.models.vae import VAE, VAEConfig
    from melody_edge.training.run_dir import load_vae

    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    pipeline.train_vae(toy_data, "tiny", run, pipeline.default_options("tiny", "vae", steps=2), log=lambda m: None)
    cfg, best = load_component(run / "vae", VAEConfig, VAE)
    with torch.no_grad():
        for p in best.parameters():
            p.add_(0.01)
    save_component(run / "vae" / "best", cfg, best)
    loaded = load_vae(run, "train dpd")
    for (name, a), b in zip(loaded.state_dict().items(), best.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_disc_start_moves_the_adversarial_phase(toy_data, fitted_run, tmp_path):
    """tiny switches the discriminators on at step 10; --disc-start 1000 keeps 14 steps reconstruction-only."""
    quiet = dict(log_every=2, warmup_steps=2, val_every=100, save_every=100)
    metrics = {}
    for name, disc_start in (("default", None), ("late", 1000)):
        run = tmp_path / name
        shutil.copytree(fitted_run, run)
        opts = pipeline.default_options("tiny", "vae", steps=14, **quiet)
        pipeline.train_vae(toy_data, "tiny", run, opts, log=lambda m: None, disc_start=disc_start)
        metrics[name] = {r["metric"] for r in read_log(run / "vae") if r["split"] == "train"}
    assert "disc" in metrics["default"] and "fm" in metrics["default"]
    assert "disc" not in metrics["late"] and "mrstft" in metrics["late"]
    with pytest.raises(ValueError, match="--disc-start must be >= 0"):
        pipeline.vae_settings("tiny", -1)
    with pytest.raises(ValueError, match="VAE only"):
        pipeline.train_lm(toy_data, "tiny", fitted_run, pipeline.default_options("tiny", "lm"), disc_start=5)


def test_options_validate():
    with pytest.raises(ValueError, match="--steps"):
        TrainOptions(steps=0)
    with pytest.raises(ValueError, match="--lr"):
        TrainOptions(lr=-1.0)
    o = TrainOptions(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert o.lr_at(0) == pytest.approx(0.1) and o.lr_at(9) == pytest.approx(1.0)
    assert o.lr_at(100) == pytest.approx(0.1)


def test_nonfinite_loss_stops_with_advice(toy_data, fitted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    with pytest.raises(FloatingPointError, match="lower --lr"):
        pipeline.train_lm(
            toy_data, "tiny", run, pipeline.default_options("tiny", "lm", steps=3, lr=1e30), log=lambda m: None
        )


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test runs on Linux CI")
def test_torchrun_two_processes(toy_data, fitted_run, tmp_path):
    """The same command under torchrun: 2 ranks (gloo), DDP gradients, rank 0 writes the checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "melody_edge.cli", "train", "lm", "--data", str(toy_data), "--config", "tiny",
        "--out", str(run), "--steps", "4", "--threads", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = json.loads((run / "lm" / "train_state" / "state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 2
    assert torch.isfinite(torch.tensor([r["value"] for r in read_log(run / "lm")])).all()


def test_evaluate_writes_the_model_card_figures(toy_data, tmp_path):
    from melody_edge.training.evaluate import evaluate_checkpoint, plot_training_curves

    over = {n: {"steps": 1, "warmup_steps": 1} for n in ("vae", "dpd", "lm")}
    ckpt = pipeline.train_all(toy_data, "tiny", tmp_path / "run", over, log=lambda m: None).checkpoint
    (tmp_path / "card").mkdir()
    assert plot_training_curves(tmp_path / "run", tmp_path / "card").stat().st_size > 5_000
    report = evaluate_checkpoint(ckpt, toy_data, tmp_path / "card", generate_clips=1, seconds=2.5, log=lambda m: None)
    assert report["lm"]["uniform_ce"] == pytest.approx(6.9315, abs=1e-3)
    assert report["key_accuracy"]["real_heldout"] == 1.0  # pure arpeggios: the estimator must get them right
    assert report["key_accuracy"]["finite"] and set(report["dpd"]) >= {"mean", "windows"}
    assert "vae_reconstruction" in report["key_accuracy"]
    assert 0.0 <= report["key_accuracy"]["dpd_from_real_tokens"] <= 1.0
    for name in ("real_tokens_chroma_lookup", "lm_tokens_chroma_lookup"):
        assert 0.0 <= report["key_accuracy"][name] <= 1.0, name
    assert report["tempo_accuracy"]["dpd_from_real_tokens"]["clips"] == 1
    use = report["dpd_token_use"]
    assert use["gaussian_baseline_mse"] > 0 and use["latent_variance"] > 0
    assert all(math.isfinite(use[f"{k}_relative_mse"]) for k in ("real_tokens", "null_tokens", "other_windows_tokens"))
    tempo = report["tempo_accuracy"]
    assert tempo["real_heldout"]["clips"] == 2 and tempo["generated"]["clips"] == 1
    assert tempo["real_heldout"]["accuracy2"] == 1.0  # a steady note train: the beat or its double
    assert (tmp_path / "card" / "spectrograms.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "card" / "model_card.json").read_text())["vae"]["clips"] == 2


def test_init_from_fine_tunes_and_names_what_it_cannot_load(toy_data, fitted_run, tmp_path):
    from melody_edge.models.checkpoint import load_component, save_component
    from melody_edge.models.dpd import DPDConfig, DualPathDiffusion
    from melody_edge.training.loop import init_parameters, init_runtime
    from melody_edge.training.run_dir import load_tokenizer

    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    pipeline.train_vae(toy_data, "tiny", run, pipeline.default_options("tiny", "vae", steps=2), log=lambda m: None)
    # A source trained without the centroid path: everything but the new projection loads.
    cfg = pipeline.resolve_config("tiny").dpd
    torch.manual_seed(5)
    old = DualPathDiffusion(cfg.replace(token_feature_dim=0))
    save_component(tmp_path / "old", old.config, old)
    logs: list[str] = []
    opts = pipeline.default_options("tiny", "dpd", steps=1, warmup_steps=1, val_every=1, init_from=tmp_path / "old")
    result = pipeline.train_dpd(toy_data, "tiny", run, opts, log=logs.append)
    # Validation also says whether the tokens are read yet, but the loss still picks the best weights.
    assert math.isfinite(result.validation["token_gain"]) and primary_metric(result.validation) == "mean"
    # A task may name its own figure (the chroma-weighted DPD's "objective"); absent, the default holds.
    assert primary_metric({"mean": 1.0, "objective": 2.0}, "objective") == "objective"
    assert primary_metric(result.validation, "objective") == "mean"
    assert any("token_feature_proj.weight" in m and str(tmp_path / "old") in m for m in logs), logs
    _, trained = load_component(run / "dpd", DPDConfig, DualPathDiffusion)
    # The buffer comes from this run's tokenizer, not from the source.
    assert torch.equal(trained.token_features[: cfg.token_vocab], load_tokenizer(run, "test").centroids)
    # The token prior is fitted on this run's latents (its null row holds their global mean), not taken
    # from the source's buffers.
    assert cfg.token_prior and not torch.equal(trained.token_latent_mean, old.token_latent_mean)
    task = pipeline._dpd_task(toy_data, pipeline.resolve_config("tiny"), run, opts, init_runtime(), lambda m: None)
    pairs = zip(task.train_latents, task.train_tokens, strict=True)
    everything = torch.cat(
        [z[:, : min(t.numel(), z.shape[1] // cfg.frames_per_token) * cfg.frames_per_token] for z, t in pairs], 1
    )
    assert torch.allclose(trained.token_latent_mean[-1], everything.mean(1), atol=1e-4)
    # A new run starts as the prior's velocity: fresh (nothing loaded) or from a source without the prior.
    # A source that had the prior keeps its read-out.
    kept = task.module.out_proj.weight.clone()
    task.on_new_run([], lambda m: None)
    assert torch.equal(task.module.out_proj.weight, kept)
    task.on_new_run(None, lambda m: None)
    for layer in (task.module.out_proj, task.module.prior_proj):
        assert not layer.weight.any() and not layer.bias.any()
    z, tok = task.val_z[:1], task.val_tokens[:1]
    angles = torch.full((1, cfg.window_frames), 1.0)
    with torch.no_grad():
        assert torch.equal(task.module(z, angles, tok), task.module.prior(z, angles, tok)[1])
    moved = (trained.in_proj.weight - old.in_proj.weight).abs().max()
    assert 0 < moved < 0.1  # one small step away from the source, not a fresh initialisation
    with pytest.raises(CheckpointError, match=r"not weights of this component.*shapes differ"):
        init_parameters(DualPathDiffusion(cfg.replace(dim=64, ffn_dim=128)), tmp_path / "old")
    with pytest.raises(CheckpointError, match="weights file not found"):
        init_parameters(trained, tmp_path / "nowhere")


def test_lm_prefix_rows_come_from_the_conditioner_codewords(toy_data, fitted_run, tmp_path):
    from safetensors.torch import load_file

    from melody_edge.models.checkpoint import load_component
    from melody_edge.models.lm import LMConfig, SemanticLM
    from melody_edge.training.lm_prefix import CodewordPrefix
    from melody_edge.training.run_dir import load_conditioner

    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    opts = pipeline.default_options("tiny", "lm", steps=3, warmup_steps=1, val_every=3)
    result = pipeline.train_lm(toy_data, "tiny", run, opts, log=lambda m: None)
    # Validation says whether the prompt is read (own vs another clip's prefix); CE still picks the best.
    for key in ("ce", "ce_other_prefix", "first_ce", "first_ce_other_prefix", "bag_ce"):
        assert math.isfinite(result.validation[key]), result.validation
    assert primary_metric(result.validation) == "ce"
    _, lm = load_component(run / "lm", LMConfig, SemanticLM)
    prefix = CodewordPrefix(load_conditioner(run, "test").rvq.codebooks, lm.config.dim)
    prefix.load_state_dict(load_file(str(run / "lm" / "extra" / "prefix.safetensors")))
    # The saved LM is a plain SemanticLM whose prefix rows are the map's, so export and runtimes see them.
    torch.testing.assert_close(lm.embed.weight[lm.config.vocab_size :], prefix.rows())


def test_prompt_dropout_trains_some_windows_on_the_generic_prompt(toy_data, fitted_run, tmp_path):
    from melody_edge.training.loop import init_runtime
    from melody_edge.training.train_seq import LMTrainSettings

    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    opts = pipeline.default_options("tiny", "lm", steps=1, batch_size=64)
    task = pipeline._lm_task(toy_data, pipeline.resolve_config("tiny"), run, opts, init_runtime(), print, 0.5)
    seen = []

    def record(codes, tokens):
        seen.append(codes)
        zero = sum(p.sum() * 0 for p in task.module.parameters())
        return torch.stack([zero, zero, zero])

    task.loss = record
    task.attach(task.optimizers(opts))
    task.train_step(0, torch.Generator().manual_seed(0))
    is_null = (seen[0] == task.null_codes).all(dim=1)
    assert 0 < int(is_null.sum()) < 64  # about half the windows, not none and not all
    # The run records the generic prompt's codes; an assembled checkpoint guides its LM against them.
    from melody_edge.training.run_dir import DEFAULT_LM_GUIDANCE, lm_guidance_fields

    fields = lm_guidance_fields(run)
    assert fields == {"lm_null_codes": tuple(task.null_codes.tolist()), "lm_guidance_scale": DEFAULT_LM_GUIDANCE}
    assert pipeline.resolve_config("tiny").replace(**fields).lm_guidance_scale == DEFAULT_LM_GUIDANCE
    assert lm_guidance_fields(fitted_run) == {}  # trained without prompt dropout: no guidance
    # Training saves (which rewrite RUN/lm atomically) keep the record, so `train assemble` still guides.
    again = pipeline.default_options("tiny", "lm", steps=2, batch_size=4, save_every=1)
    pipeline.train_lm(toy_data, "tiny", run, again, prompt_dropout=0.5)
    assert (run / "lm" / "log.csv").is_file() and lm_guidance_fields(run) == fields
    with pytest.raises(ValueError, match="prompt-dropout"):
        LMTrainSettings(prompt_dropout=1.0)
    with pytest.raises(ValueError, match="bag_weight"):
        LMTrainSettings(bag_weight=-1.0)
    with pytest.raises(ValueError, match="LM only"):
        pipeline.train_dpd(toy_data, "tiny", run, opts, bag_weight=0.1)
    with pytest.raises(ValueError, match="LM only"):
        pipeline.train_dpd(toy_data, "tiny", run, opts, prompt_dropout=0.1)
    # The LM's prompt dropout (guidance's unconditional branch) is per config: the demo recipe guides, tiny stays plain.
    assert pipeline.lm_settings("demo").prompt_dropout == 0.2 == pipeline.lm_settings("edge").prompt_dropout
    assert pipeline.lm_settings("tiny").prompt_dropout == 0.0
    assert pipeline.lm_settings("demo", prompt_dropout=0.0).prompt_dropout == 0.0


def test_bag_weight_weighs_the_window_bag_term_in_the_lm_loss(toy_data, fitted_run, tmp_path, monkeypatch):
    """[ce, first_ce, bag_ce] from the loss: the step's gradient carries bag_ce at `--bag-weight`."""
    from melody_edge.training import train_seq
    from melody_edge.training.loop import init_runtime

    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    opts = pipeline.default_options("tiny", "lm", steps=1, batch_size=2)
    cfg = pipeline.resolve_config("tiny")
    task = pipeline._lm_task(toy_data, cfg, run, opts, init_runtime(), print, bag_weight=0.3)
    w = task.module.norm.weight
    task.loss = lambda codes, tokens: torch.stack([w[0] * 0, w[1] * 0, w[2]])
    grads = []
    monkeypatch.setattr(train_seq, "clip_and_step", lambda module, opt, clip: grads.append(w.grad[:3].tolist()))
    task.attach(task.optimizers(opts))
    task.train_step(0, torch.Generator().manual_seed(0))
    assert grads[0] == pytest.approx([0.0, 0.0, 0.3])
    assert pipeline.lm_settings("tiny").bag_weight == 0.0  # tests' tiny runs keep the plain losses
    assert pipeline.lm_settings("demo").bag_weight == 1.0 == pipeline.lm_settings("edge").bag_weight


def test_chroma_weight_trains_the_dpd_through_the_frozen_decoder(toy_data, fitted_run, tmp_path):
    """--chroma-weight adds the decoded chroma loss: logged apart, validated, and what best/ is chosen by."""
    from melody_edge.training.train_seq import DPDTrainSettings

    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    pipeline.train_vae(toy_data, "tiny", run, pipeline.default_options("tiny", "vae", steps=4), log=lambda m: None)
    vae_before = (run / "vae" / "model.safetensors").read_bytes()
    opts = pipeline.default_options("tiny", "dpd", steps=2, warmup_steps=1, log_every=1, val_every=2, save_every=2)
    pipeline.train_dpd(toy_data, "tiny", run, opts, log=lambda m: None, chroma_weight=1.0)
    rows = read_log(run / "dpd")
    train = {r["metric"]: r["value"] for r in rows if r["split"] == "train"}
    val = {r["metric"]: r["value"] for r in rows if r["split"] == "validation"}
    assert 0 < train["chroma"] <= 1 and abs(train["loss"] - train["mse"] - train["chroma"]) < 1e-4
    assert 0 < val["chroma"] <= 1 and abs(val["objective"] - val["mean"] - val["chroma"]) < 1e-4
    best = json.loads((run / "dpd" / "train_state" / "state.json").read_text())["best"]
    assert best["metric"] == "objective" and best["inputs"].endswith("chroma weight 1")
    assert (run / "vae" / "model.safetensors").read_bytes() == vae_before  # the decoder only renders
    # The chroma term moves the DPD: one step with and without it from the same weights and batch differ.
    trained = {}
    for weight in (0.0, 1.0):
        other = tmp_path / f"w{weight:g}"
        shutil.copytree(fitted_run, other)
        shutil.copytree(run / "vae", other / "vae")
        one = pipeline.default_options("tiny", "dpd", steps=1, warmup_steps=1, val_every=5, save_every=5)
        pipeline.train_dpd(toy_data, "tiny", other, one, log=lambda m: None, chroma_weight=weight)
        trained[weight] = load_weights(other / "dpd" / "model.safetensors")
    assert any(not torch.equal(trained[0.0][k], trained[1.0][k]) for k in trained[0.0])
    with pytest.raises(ValueError, match="DPD only"):
        pipeline.train_lm(toy_data, "tiny", run, pipeline.default_options("tiny", "lm", steps=1), chroma_weight=1.0)
    with pytest.raises(ValueError, match="chroma-weight"):
        DPDTrainSettings(chroma_weight=-1.0)
    # The demo recipe trains with it (and unknown configs as demo); tiny leaves it off for fast tests.
    assert pipeline.dpd_settings("demo").chroma_weight == 1.0 == pipeline.dpd_settings("paper").chroma_weight
    assert pipeline.dpd_settings("tiny").chroma_weight == 0.0
    assert pipeline.dpd_settings("demo", chroma_weight=0.0).chroma_weight == 0.0


def test_each_train_command_takes_its_own_option_only(toy_data, tmp_path):
    """`train vae|dpd|lm` each carry options of their own, passed through to the pipeline by name."""
    from click.testing import CliRunner

    from melody_edge.cli import main

    base = ["--data", str(toy_data), "--config", "tiny", "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(main, ["train", "vae", *base, "--disc-start", "-1"])
    assert res.exit_code == 1 and "--disc-start must be >= 0" in res.output, res.output
    res = CliRunner().invoke(main, ["train", "lm", *base, "--bag-weight", "-1"])
    assert res.exit_code == 1 and "bag_weight must be in [0, 10]" in res.output, res.output
    others = (("vae", "--chroma-weight"), ("dpd", "--prompt-dropout"), ("dpd", "--bag-weight"), ("lm", "--disc-start"))
    for component, foreign in others:
        res = CliRunner().invoke(main, ["train", component, *base, foreign, "1"])
        assert res.exit_code == 2 and "No such option" in res.output, res.output
