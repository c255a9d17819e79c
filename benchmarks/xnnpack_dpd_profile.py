"""Where an XNNPACK DPD window pass spends its time, in the model's form and in the form the export lowers.

Lowers the DPD of a config (random weights, seed 0) twice: as written in ``models/`` (SRU as a stacked
scan with ``flip``, attention through ``scaled_dot_product_attention``, means as ``mean``) and after
``export/xnnpack_swaps.py: prepare_dpd_for_xnnpack``; ``--stepwise`` adds the forms in between, so each
swap's share shows. Runs each through the ExecuTorch runtime
with ETDump on, alternately, and prints the median window-pass time and the operators that take the
time (XNNPACK partitions against portable kernels). Lowering the ``edge`` DPD takes minutes.

    python benchmarks/xnnpack_dpd_profile.py --config edge --repeats 5 --json out/bench/xnnpack_dpd_profile.json
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

from melody_edge.export.adapters import DPDWindow, method_specs
from melody_edge.export.executorch_export import export_component
from melody_edge.export.xnnpack_swaps import (
    prepare_dpd_for_xnnpack,
    replace_attention_with_explicit,
    replace_sru_with_loop_form,
)
from melody_edge.models.melody import build_model, preset


def _profile(pte: Path, inputs: list[torch.Tensor], work: Path) -> list[dict]:
    """Operator events of one run: [{name, delegated, ms}] summed over calls of the same operator."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    module = portable_lib._load_for_executorch(str(pte), enable_etdump=True, debug_buffer_size=0)
    module.forward(inputs)
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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from executorch.extension.pybindings import portable_lib

    model = build_model(preset(args.config), seed=0)
    spec = method_specs(model, prefill_len=16, steps=model.config.steps)["dpd"]["forward"]
    forms = {"model_form": model.dpd}
    if args.stepwise:
        forms["sru_swap"] = replace_sru_with_loop_form(model.dpd)
        forms["sru_attention_swaps"] = replace_attention_with_explicit(forms["sru_swap"])
    forms["export_form"] = prepare_dpd_for_xnnpack(model.dpd)
    work = args.work or Path(tempfile.mkdtemp(prefix="dpd_profile_"))
    work.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(spec.inputs[0].shape, generator=gen),
        torch.rand(spec.inputs[1].shape, generator=gen) * (torch.pi / 2),
        torch.randint(model.config.dpd.token_vocab + 1, spec.inputs[2].shape, generator=gen),
    ]
    with torch.no_grad():
        reference = model.dpd(*inputs)
    result: dict = {"config": args.config, "threads": args.threads, "repeats": args.repeats, "forms": {}}
    modules = {}
    for name, dpd in forms.items():
        t0 = time.perf_counter()
        path = work / f"dpd_{name}.pte"
        size = export_component({"forward": (DPDWindow(dpd), spec)}, "executorch-xnnpack", path)
        lower_s = time.perf_counter() - t0
        modules[name] = portable_lib._load_for_executorch(str(path))
        out = modules[name].forward(inputs)[0]
        err = float((out - reference).abs().max())
        result["forms"][name] = {"lower_s": round(lower_s, 1), "pte_bytes": size, "max_abs_err_vs_eager": err}
        print(f"lowered {name}: {lower_s:.0f} s, {size / 1e6:.1f} MB, max |err| vs eager {err:.2e}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(args.repeats):
        for name, module in modules.items():  # alternate, so drift in machine load hits both
            t0 = time.perf_counter()
            module.forward(inputs)
            times[name].append(time.perf_counter() - t0)
    for name in forms:
        entry = result["forms"][name]
        entry["window_pass_s"] = times[name]
        entry["median_s"] = statistics.median(times[name])
        entry["profile"] = _profile(work / f"dpd_{name}.pte", inputs, work)
    base, new = result["forms"]["model_form"]["median_s"], result["forms"]["export_form"]["median_s"]
    result["speedup"] = base / new
    print(f"\n{'form':<20} {'median s':>9}  top operators (ms, calls)")
    for name in forms:
        entry = result["forms"][name]
        rows = [r for r in entry["profile"] if r["name"] not in ("Method::execute", "OPERATOR_CALL", "DELEGATE_CALL")]
        top = ", ".join(
            f"{r['name']}{'' if r['delegated'] else ' [portable]'} {r['ms']:.0f} ({r['calls']})" for r in rows[:6]
        )
        print(f"{name:<20} {entry['median_s']:>9.3f}  {top}")
    print(f"export form / model form speed-up: {result['speedup']:.2f}x (median of {args.repeats})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
