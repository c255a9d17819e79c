"""``melody-edge export --all``: every target x recipe this host can build, one bundle each, and a table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ..models.conditioning import parse_token_list
from ..models.melody import MeLoDy
from ..quantization.recipes import RecipeError, available_recipes, load_recipe
from ..runtime.manifest import BundleError
from .bundle import HOST_TARGETS, ExportError, export_bundle, unbuildable_reason
from .parity import ParityError


def load_presets(path: str | Path, model: MeLoDy) -> list[dict]:
    """Prompt presets from a JSON file: ``[{"name": ..., "prompt": ..., "tokens": [12 codes]}, ...]``.

    For hosts without a text encoder: the tokens are what an app conditions on.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ExportError(f"{path}: presets file not found") from exc
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, list) or not raw:
        raise ExportError(f"{path}: expected a non-empty JSON list of {{name, prompt, tokens}} objects")
    cfg = model.config.conditioner
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "name" not in item or "tokens" not in item:
            raise ExportError(f"{path}: preset {i} needs 'name' and 'tokens' (12 codes)")
        codes = ",".join(str(t) for t in item["tokens"])
        try:
            tokens = parse_token_list(codes, cfg.levels, cfg.codebook_size)
        except ValueError as exc:
            raise ExportError(f"{path}: preset {item['name']!r}: {exc}") from exc
        out.append({"name": str(item["name"]), "prompt": str(item.get("prompt", "")), "tokens": tokens[0].tolist()})
    return out


def export_all(
    model: MeLoDy,
    out_dir: str | Path,
    targets: tuple[str, ...] = HOST_TARGETS,
    log: Callable[[str], None] = print,
    pairs: list[tuple[str, str]] | None = None,
    **options,
) -> list[dict]:
    """Build ``out_dir/<target>-<recipe>`` for every buildable pair (or only ``pairs``); never stop at
    the first failure.

    Returns one row per pair: target, recipe, status (ok | failed | skipped), reason, bundle size,
    export seconds and the weakest parity figure.
    """
    out_dir = Path(out_dir)
    rows = []
    for target in targets if pairs is None else list(dict.fromkeys(t for t, _ in pairs)):
        why = unbuildable_reason(target)
        names = available_recipes(target) if why is None else []
        if pairs is not None:
            names = [r for t, r in pairs if t == target]
        if why is not None:
            rows.append(_row(target, "*", "skipped", why))
            continue
        for name in names:
            bundle = out_dir / f"{target}-{name}"
            log(f"== {target} / {name} -> {bundle}")
            t0 = time.perf_counter()
            try:
                manifest = export_bundle(model, target, load_recipe(target, name), bundle, log=log, **options)
            except Exception as exc:  # a failed pair never stops the others; Ctrl-C (not an Exception) does
                known = isinstance(exc, (ParityError, ExportError, RecipeError, BundleError))
                message = str(exc) if known else f"{type(exc).__name__}: {exc}"
                # The table gets the first line (a traceback-sized message would swamp it); the log all of it.
                rows.append(_row(target, name, "failed", message.partition("\n")[0], seconds=time.perf_counter() - t0))
                log(f"   FAILED: {message}")
                continue
            size = sum(f["bytes"] for f in manifest["files"].values())
            rows.append(_row(target, name, "ok", "", size, time.perf_counter() - t0, _weakest(bundle / "parity.json")))
    return rows


def _row(target, recipe, status, reason, size=None, seconds=None, parity=None) -> dict:
    return {
        "target": target,
        "recipe": recipe,
        "status": status,
        "reason": reason,
        "bytes": size,
        "seconds": seconds,
        "parity": parity,
    }


def _weakest(parity_path: Path) -> str:
    if not parity_path.is_file():
        return "not verified"
    report = json.loads(parity_path.read_text())
    if report.get("run") is False:
        return "not run (" + str(report.get("reason")) + "); structure ok"
    worst = min(
        ((by["float"]["snr_db"], comp) for comp, by in report["components"].items()),
        default=(float("nan"), "-"),
    )
    lm = report["components"].get("lm", {}).get("float", {})
    text = f"min SNR {worst[0]:.1f} dB ({worst[1]})"
    if lm:
        text += f", LM greedy {lm['greedy_match'] * 100:.0f} %, top-1 {lm['teacher_forced_top1'] * 100:.0f} %"
    return text


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'target':<20} {'recipe':<11} {'status':<8} {'MB':>8} {'s':>7}  parity / reason"]
    for r in rows:
        size = f"{r['bytes'] / 1e6:8.2f}" if r["bytes"] is not None else f"{'-':>8}"
        secs = f"{r['seconds']:7.1f}" if r["seconds"] is not None else f"{'-':>7}"
        detail = r["parity"] if r["status"] == "ok" else r["reason"]
        lines.append(f"{r['target']:<20} {r['recipe']:<11} {r['status']:<8} {size} {secs}  {detail}")
    return "\n".join(lines)
