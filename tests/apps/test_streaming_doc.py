"""docs/streaming.md's worked example is the Python runtime's own output, not hand-derived.

The tables between the ``worked-example`` markers are regenerated here from a streamed generation of the
tiny ONNX bundle (tests/conftest.py), recording every backend call through the generator's recorder hook
(what runtime/trace.py's ``record_trace`` writes to a trace file, grouped by the chunk it belongs to).
The test fails when the doc's tables differ; on failure it prints the tables to paste.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from melody_edge.models.diffusion import angle_schedule
from melody_edge.runtime.open import open_bundle
from melody_edge.runtime.pipeline import GenerationSettings, StreamingGenerator

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "streaming.md"
BEGIN, END = "<!-- worked-example: begin -->", "<!-- worked-example: end -->"
# 12.5 s = 5 chunks: the progressive first window (chunks 0-3), one window slide (chunk 4), the final flush.
SETTINGS = GenerationSettings(seconds=12.5, steps=2, guidance_scale=2.5, temperature=1.0, top_k=20, seed=11)


def _f(x: float) -> str:
    return f"{x:.6f}"


def _calls(records: list[tuple[str, dict]]) -> str:
    """One chunk's backend calls in order, runs of the same call merged."""
    out: list[str] = []
    i = 0
    while i < len(records):
        event, a = records[i]
        j = i
        while j + 1 < len(records) and records[j + 1][0] == event and event in ("lm_decode", "dpd"):
            j += 1
        n = j - i + 1
        if event == "noise":
            out.append(f"noise {a['values'].shape[-1]} fr")
        elif event == "lm_prefill":
            out.append(f"prefill {a['ids'].numel()} ids @{int(a['start_pos'])}")
        elif event == "lm_decode":
            out.append(f"decode ×{n} @{int(a['pos'])}–{int(records[j][1]['pos'])}")
        elif event == "dpd":
            out.append(f"dpd ×{n}")
        elif event == "vae_decode":
            out.append(f"vae {a['z'].shape[-1]} fr")
        else:
            out.append(event)
        i = j + 1
    return " → ".join(out)


def _window(spec, first_chunk: int, dpd: dict) -> str:
    """Each window chunk at the chunk's first DPD call: K kept (angle 0), T target, N noise (π/2, null tokens)."""
    angles, tokens = dpd["angles"][0].numpy(), dpd["tokens"][0].numpy()
    base = spec.chunk_token_range(first_chunk)[0]
    marks = []
    for k in range(spec.chunks):
        a = np.unique(angles[k * spec.chunk_frames : (k + 1) * spec.chunk_frames])
        lo, hi = spec.chunk_token_range(first_chunk + k)
        null = tokens[lo - base : hi - base] == spec.null_token
        if len(a) != 1 or null.any() != null.all():
            marks.append("?")
        elif a[0] == 0.0 and not null.any():
            marks.append("K")
        elif math.isclose(a[0], math.pi / 2, rel_tol=1e-6):
            marks.append("N" if null.all() else "T")
        else:
            marks.append("?")
    return " ".join(marks)


def worked_example(backend) -> list[list[str]]:
    """The rows of the doc's two tables (header rows included), from one streamed run."""
    spec = backend.spec
    records: list[tuple[str, dict]] = []
    gen = StreamingGenerator(
        backend, spec, recorder=lambda e, p: records.append((e, p)), use_sampler_artifact=False
    )  # record_trace's generator
    chunks = []
    for chunk in gen.stream(list(range(spec.prefix_levels)), SETTINGS):
        chunks.append((chunk, records[:]))
        records.clear()
    schedule = angle_schedule(SETTINGS.steps)
    counts: dict[str, int] = {}
    for _, recs in chunks:
        for event, _ in recs:
            counts[event] = counts.get(event, 0) + 1
    samples = sum(c.audio.shape[0] for c, _ in chunks)
    full = [c for c, _ in chunks if c.tokens]
    summary = [
        ["figure", "value"],
        [
            "settings",
            f"{SETTINGS.seconds} s, T = {SETTINGS.steps}, guidance {SETTINGS.guidance_scale}, top-k {SETTINGS.top_k}, "
            f"seed {SETTINGS.seed}",
        ],
        [
            "sizes",
            f"C = {spec.chunk_frames}, M = {spec.chunks}, W = {spec.window_frames}, S = {spec.window_tokens}, "
            f"R = {spec.vae_context_frames}, hop {spec.hop_length}, {spec.sample_rate} Hz",
        ],
        [
            f"angle_schedule({SETTINGS.steps})",
            ", ".join(_f(w) for w in schedule) + f" (sum {_f(sum(schedule))} = π/2)",
        ],
        ["chunks", f"{len(full)} + flush" if len(chunks) > len(full) else f"{len(full)}"],
        ["samples", f"{samples} = {SETTINGS.seconds} s × {spec.sample_rate}"],
        [
            "calls",
            ", ".join(f"{counts.get(e, 0)} {e}" for e in ("lm_prefill", "lm_decode", "dpd", "vae_decode")),
        ],
    ]
    table = [["chunk", "calls in order", "tokens", "window at DPD call 1", "target angle per DPD call", "samples"]]
    for chunk, recs in chunks:
        dpds = [a for e, a in recs if e == "dpd"]
        if not chunk.tokens:
            table.append(["flush", _calls(recs), "—", "—", "—", str(chunk.audio.shape[0])])
            continue
        first_chunk = max(0, chunk.index - spec.chunks + 1)
        j = chunk.index - first_chunk
        lo, hi = spec.chunk_token_range(chunk.index)
        assert len(chunk.tokens) == hi - lo
        target = [float(a["angles"][0, j * spec.chunk_frames]) for a in dpds]
        table.append(
            [
                str(chunk.index),
                _calls(recs),
                f"[{lo}, {hi})",
                _window(spec, first_chunk, dpds[0]),
                ", ".join(_f(x) for x in target),
                str(chunk.audio.shape[0]),
            ]
        )
    return summary + table


def _doc_rows(text: str) -> list[list[str]]:
    assert BEGIN in text and END in text, f"{DOC.name} lacks the {BEGIN} / {END} markers"
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    rows = []
    for line in block.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            continue
        rows.append([c.strip().strip("`").strip() for c in line.strip("|").split("|")])
    return rows


def test_worked_example_is_the_runtimes(bundle_factory):
    backend, _ = open_bundle(bundle_factory("onnx", "fp32"))
    want = worked_example(backend)
    got = _doc_rows(DOC.read_text())
    assert got == want, "docs/streaming.md's worked example differs from the runtime; paste:\n" + "\n".join(
        "| " + " | ".join(r) + " |" for r in want
    )


def test_doc_table_parser():
    text = f"x\n{BEGIN}\n| a | b |\n| --- | --- |\n| `1` | 2 |\n{END}\n| 3 | 4 |\n"
    assert _doc_rows(text) == [["a", "b"], ["1", "2"]]
