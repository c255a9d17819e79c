"""Export a config to targets x recipes; print a table of sizes, export times and parity; write JSON.

    python benchmarks/export_matrix.py --config edge --out out/bench/edge \
        --pairs executorch-xnnpack:fp32,executorch-xnnpack:int8,onnx:fp32,onnx:int8,onnx:int4

Each bundle goes to ``OUT/<target>-<recipe>``; the summary, with every bundle's full parity report,
to ``OUT/export_matrix.json``. Pairs that fail their gate are reported, not hidden. Core ML targets
convert and validate here but do not run (parity "not run").
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from melody_edge.export.export_all import export_all, format_rows
from melody_edge.models.melody import load_model
from melody_edge.runtime.bench import cpu_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="edge", help="built-in config with random weights")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a trained checkpoint instead (e.g. the demo)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", default="", help="target:recipe,... (default: every buildable pair)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--sampler", action="store_true", help="also export the unrolled T-step sampler")
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args(argv)

    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")] if args.pairs else None
    model = load_model(None if args.checkpoint else args.config, args.checkpoint)
    source = {"checkpoint": str(args.checkpoint.resolve())} if args.checkpoint else {"config": args.config, "seed": 0}
    rows = export_all(
        model,
        args.out,
        pairs=pairs,
        log=lambda m: print(m, flush=True),
        steps=args.steps,
        verify=not args.no_verify,
        force=True,
        sampler_artifact=args.sampler,
        model_source=source,
    )
    print(format_rows(rows))
    for row in rows:
        parity = args.out / f"{row['target']}-{row['recipe']}" / "parity.json"
        row["parity_report"] = json.loads(parity.read_text()) if row["status"] == "ok" and parity.exists() else None
    result = {
        "config": model.config.name,
        "source": source,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpu_model": cpu_model(), "python": sys.version.split()[0]},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_matrix.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
