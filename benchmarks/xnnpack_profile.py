"""Where an XNNPACK component spends its time, from ExecuTorch's ETDump profiler, beside PyTorch eager.

``--component dpd`` (default): lowers the DPD of a config (random weights, seed 0) as written in
``models/`` (SRU as a stacked scan with ``flip``, attention through ``scaled_dot_product_attention``,
means as ``mean``) and in the form the export lowers (``export/xnnpack_swaps.py:
prepare_dpd_for_xnnpack``); ``--stepwise`` adds the forms in between, so each swap's share shows.
``lm_decode``: one LM decode step, as written and as exported (``prepare_lm_for_xnnpack``);
``vae_decoder``: the VAE decoder's chunk, likewise (``prepare_vae_for_xnnpack``). Every form
and PyTorch eager run alternately (drift in machine load hits all of them); the script prints each
median and the operators that take the time (XNNPACK partitions against portable kernels).

    python benchmarks/xnnpack_profile.py --config edge --repeats 5 --json out/bench/xnnpack_dpd.json
    python benchmarks/xnnpack_profile.py --config edge --component vae_decoder --json out/bench/xnnpack_vae.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from melody_edge.export.adapters import DPDWindow, LMDecode, VAEDecodeChunk, method_specs
from melody_edge.export.executorch_export import export_component
from melody_edge.export.xnnpack_swaps import (
    prepare_dpd_for_xnnpack,
    prepare_lm_for_xnnpack,
    prepare_vae_for_xnnpack,
    replace_attention_with_explicit,
    replace_sru_with_loop_form,
)
from melody_edge.models.melody import build_model, preset


def _profile(pte: Path, method: str, inputs: list[torch.Tensor], work: Path) -> list[dict]:
    """Operator events of one run: [{name, delegated, ms}] summed over calls of the same operator."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    module = portable_lib._load_for_executorch(str(pte), enable_etdump=True, debug_buffer_size=0)
    module.run_method(method, inputs)
    dump = work / f"{pte.stem}.etdp"
    module.write_etdump_result_to_file(str(dump), str(work / f"{pte.stem}.bin"))
    df = Inspector(etdump_path=str(dump)).to_dataframe()
    df = df[df.event_block_name == "Execute"]
    rows: dict[tuple[str, bool], dict] = {}
    for name, delegated, ms in zip(df.event_name, df.is_delegated_op, df["avg (ms)"], strict=True):
        name = re.sub(r"\s*#?\d*$", "", str(name))
        row = rows.setdefault(
            (name, bool(delegated)), {"name": name, "delegated": bool(delegated), "ms": 0.0, "calls": 0}
        )
        row["ms"] += float(ms)
        row["calls"] += 1
    return sorted(rows.values(), key=lambda r: -r["ms"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="edge")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="Keep the .pte files here (default: a temp dir).")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--stepwise", action="store_true", help="Also lower the forms between: SRU swap, then + attention swap."
    )
    ap.add_argument(
        "--component",
        choices=("dpd", "vae_decoder", "lm_decode"),
        default="dpd",
        help="What to profile: the DPD window pass, the VAE decoder's chunk, or one LM decode step.",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from executorch.extension.pybindings import portable_lib

    model = build_model(preset(args.config), seed=0)
    specs = method_specs(model, prefill_len=16, steps=model.config.steps)
    gen = torch.Generator().manual_seed(0)
    component, method = args.component, "forward"
    if component == "vae_decoder":
        spec = specs["vae_decoder"]["forward"]
        forms = {"model_form": model.vae, "export_form": prepare_vae_for_xnnpack(model.vae)}
        wrap, run_eager = VAEDecodeChunk, VAEDecodeChunk(model.vae)
        inputs = [torch.randn(spec.inputs[0].shape, generator=gen)]
    elif component == "lm_decode":
        spec, method = specs["lm"]["decode"], "decode"
        forms = {"model_form": model.lm, "export_form": prepare_lm_for_xnnpack(model.lm)}
        wrap, run_eager = LMDecode, LMDecode(model.lm)
        # A step late in the window: the cost does not depend on it (the mask covers the whole cache).
        inputs = [torch.tensor([[7]]), torch.tensor([model.config.lm.max_seq_len // 2])]
    else:
        spec = specs["dpd"]["forward"]
        forms = {"model_form": model.dpd}
        if args.stepwise:
            forms["sru_swap"] = replace_sru_with_loop_form(model.dpd)
            forms["sru_attention_swaps"] = replace_attention_with_explicit(forms["sru_swap"])
        forms["export_form"] = prepare_dpd_for_xnnpack(model.dpd)
        wrap, run_eager = DPDWindow, model.dpd
        inputs = [
            torch.randn(spec.inputs[0].shape, generator=gen),
            torch.rand(spec.inputs[1].shape, generator=gen) * (torch.pi / 2),
            torch.randint(model.config.dpd.token_vocab + 1, spec.inputs[2].shape, generator=gen),
        ]
    work = args.work or Path(tempfile.mkdtemp(prefix="xnnpack_profile_"))
    work.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        reference = run_eager(*inputs)
    result: dict = {
        "config": args.config,
        "component": component,
        "threads": args.threads,
        "repeats": args.repeats,
        "forms": {},
    }
    modules = {}
    for name, module in forms.items():
        t0 = time.perf_counter()
        path = work / f"{component}_{name}.pte"
        size = export_component({method: (wrap(module), spec)}, "executorch-xnnpack", path)
        lower_s = time.perf_counter() - t0
        modules[name] = portable_lib._load_for_executorch(str(path))
        out = modules[name].run_method(method, inputs)[0]
        err = float((out - reference).abs().max())
        result["forms"][name] = {"lower_s": round(lower_s, 1), "pte_bytes": size, "max_abs_err_vs_eager": err}
        print(f"lowered {name}: {lower_s:.0f} s, {size / 1e6:.1f} MB, max |err| vs eager {err:.2e}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in forms}
    eager: list[float] = []
    for _ in range(args.repeats):
        for name, module in modules.items():  # alternate, so drift in machine load hits every form
            t0 = time.perf_counter()
            module.run_method(method, inputs)
            times[name].append(time.perf_counter() - t0)
        with torch.no_grad():
            t0 = time.perf_counter()
            run_eager(*inputs)
            eager.append(time.perf_counter() - t0)
    for name in forms:
        entry = result["forms"][name]
        entry["window_pass_s"] = times[name]
        entry["median_s"] = statistics.median(times[name])
        entry["profile"] = _profile(work / f"{component}_{name}.pte", method, inputs, work)
    result["eager_median_s"] = statistics.median(eager)
    last = list(forms)[-1]
    result["speedup"] = result["forms"]["model_form"]["median_s"] / result["forms"][last]["median_s"]
    print(f"\n{'form':<20} {'median s':>9}  top operators (ms, calls)")
    for name in forms:
        entry = result["forms"][name]
        rows = [r for r in entry["profile"] if r["name"] not in ("Method::execute", "OPERATOR_CALL", "DELEGATE_CALL")]
        top = ", ".join(
            f"{r['name']}{'' if r['delegated'] else ' [portable]'} {r['ms']:.0f} ({r['calls']})" for r in rows[:6]
        )
        print(f"{name:<20} {entry['median_s']:>9.3f}  {top}")
    print(f"{'PyTorch eager':<20} {result['eager_median_s']:>9.3f}")
    if len(forms) > 1:
        print(f"{last} / model form speed-up: {result['speedup']:.2f}x (median of {args.repeats})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
