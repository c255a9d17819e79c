import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from melody_edge.cli import main
from melody_edge.runtime import pipeline

TOKENS = ",".join(str(i * 37) for i in range(12))


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_info_json_has_params_and_pass_counts():
    result = invoke("info", "--config", "tiny", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info["params"]) >= {"lm", "dpd", "vae_encoder", "vae_decoder", "total"}
    assert all(isinstance(v, int) and v > 0 for v in info["params"].values())
    assert info["musiclm_nfe"] == {"10": 6250, "30": 18750}
    # tiny: 4 steps, 2.5 s chunks -> 10 s = 4 chunks: 250 tokens + 1 prefill, 16 DPD, 5 VAE.
    assert info["nfe_detail"]["10"] == {"lm": 251, "dpd": 16, "vae": 5, "total": 272}
    assert info["nfe"]["30"] == 750 + 1 + 8 + 48 + 13
    assert 0 < info["nfe_reduction_percent"]["10"] < 100
    assert all(v > 0 for v in info["flops_per_forward"].values())


def test_info_table_for_paper_config():
    result = invoke("info", "--config", "paper")
    assert result.exit_code == 0
    assert "fewer" in result.output and "dpd" in result.output


def test_generate_writes_wav_and_report(tmp_path):
    out = tmp_path / "a.wav"
    result = invoke("generate", "--config", "tiny", "--tokens", TOKENS, "--seconds", "3", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    audio, sr = sf.read(out)
    assert sr == 24000 and audio.shape == (72000,)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["time_to_first_audio_s"] > 0 and report["real_time_factor"] > 0
    assert report["conditioning_tokens"] == [i * 37 for i in range(12)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seconds", "-1"], "seconds must be a positive number"),
        (["--tokens", "1,2,3"], "12"),
        (["--config", "huge"], "unknown preset"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--lm-cfg", "3"], "lm_null_codes is empty"),
        (["--lm-cfg", "-1"], "LM guidance scale must be >= 0"),
    ],
)
def test_generate_bad_input_gives_a_clear_error(tmp_path, args, message):
    base = ["generate", "--config", "tiny", "--tokens", TOKENS, "--out", str(tmp_path / "x.wav"), "--quiet"]
    # Later options override earlier ones in click.
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_real_sigint_leaves_a_wav_and_a_report_that_agree(tmp_path):
    """Ctrl-C as a terminal sends it: SIGINT to a running `melody-edge generate`, after its first chunk."""
    out = tmp_path / "sig.wav"
    command = [sys.executable, "-m", "melody_edge.cli", "generate", "--config", "tiny", "--tokens", TOKENS]
    command += ["--seconds", "600", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_file() and out.stat().st_size > 44 + 2 * 24000) and proc.poll() is None:
            assert time.monotonic() < deadline, "no audio was written within 120 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    report = json.loads(out.with_suffix(".json").read_text())
    audio, rate = sf.read(out)
    assert report["interrupted"] is True and rate == 24000
    assert audio.shape[0] == sum(c["samples"] for c in report["chunks"]) > 0
    assert report["seconds_written"] < 600 and np.isfinite(audio).all()


def test_ctrl_c_leaves_a_valid_wav_of_finished_chunks(tmp_path, monkeypatch):
    original = pipeline.StreamingGenerator.stream

    def interrupted(self, prefix, settings):
        for i, chunk in enumerate(original(self, prefix, settings)):
            if i == 2:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(pipeline.StreamingGenerator, "stream", interrupted)
    out = tmp_path / "cut.wav"
    result = CliRunner().invoke(
        main, ["generate", "--config", "tiny", "--tokens", TOKENS, "--seconds", "10", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 130
    audio, _ = sf.read(out)
    # Two chunks were written: the first lacks the decoder's lag of R frames.
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["interrupted"] is True
    assert audio.shape[0] == sum(c["samples"] for c in report["chunks"]) > 0
    assert np.isfinite(audio).all()


def test_a_sigint_inside_a_chunks_bookkeeping_waits_for_its_end():
    from melody_edge.runtime.wav import sigint_deferred

    done = []
    with pytest.raises(KeyboardInterrupt), sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here: it must only note the signal
        done.append("chunk recorded")
    assert done == ["chunk recorded"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
