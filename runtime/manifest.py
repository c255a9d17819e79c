"""The bundle manifest: schema, checksums, and loading with clear errors.

``manifest.json`` is the contract between the exporter, this runtime and the demo apps. It is
validated against ``manifest.schema.json`` and every file's sha256 is checked before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import jsonschema

from .backend import StreamSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PARITY = "parity.json"


class BundleError(RuntimeError):
    """A bundle cannot be used; the message names the file and the fix."""


def schema() -> dict:
    return json.loads(resources.files("melody_edge.runtime").joinpath("manifest.schema.json").read_text())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def validate_manifest(manifest: dict, where: str = MANIFEST) -> None:
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise BundleError(
            f"{where}: schema version {version} is newer than this melody-edge understands ({SCHEMA_VERSION}); "
            "upgrade melody-edge or re-export the bundle with this version"
        )
    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise BundleError(f"{where}: invalid manifest at {path}: {exc.message}; re-export the bundle") from exc


def stream_spec_from_manifest(stream: dict) -> StreamSpec:
    names = StreamSpec.__dataclass_fields__.keys()
    return StreamSpec(**{k: int(stream[k]) for k in names})


def load_manifest(bundle: str | Path, check_files: bool = True) -> dict:
    """Read, validate and checksum a bundle; raise :class:`BundleError` naming what is wrong."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: bundle directory not found; create one with `melody-edge export`")
    if not path.is_file():
        raise BundleError(f"{path}: missing; {bundle} is not a melody-edge bundle (re-export it)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); the bundle is corrupt, re-export it") from exc
    validate_manifest(manifest, str(path))
    if check_files:
        for name, user in loaded_files(manifest).items():
            if name not in manifest["files"]:
                raise BundleError(
                    f"{bundle / name}: loaded by {user} but not listed in the manifest's files, so its sha256 "
                    "cannot be checked; the manifest is incomplete, re-export the bundle"
                )
        for name, meta in manifest["files"].items():
            f = bundle / name
            if not f.exists():
                raise BundleError(f"{f}: listed in the manifest but missing; copy the whole bundle directory")
            digest = sha256_tree(f)
            if digest != meta["sha256"]:
                raise BundleError(
                    f"{f}: sha256 {digest[:12]}… does not match the manifest ({meta['sha256'][:12]}…): "
                    "the file is truncated or altered; copy it again or re-export the bundle"
                )
    return manifest


def loaded_files(manifest: dict) -> dict[str, str]:
    """Every bundle file the runtime loads -> who loads it: each component's graph/program file(s), its
    shared weights (ONNX external data), and the prompt RVQ directory."""
    out: dict[str, str] = {}
    for comp, entry in manifest["components"].items():
        for name in [entry["file"], *entry.get("files", {}).values(), entry.get("shared_weights")]:
            if name:
                out.setdefault(name, f"component '{comp}'")
    if manifest.get("conditioner"):
        out.setdefault(manifest["conditioner"], "the prompt conditioner")
    return out


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a directory (``.mlpackage``) as the hash of its files' names and hashes."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def tree_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_inputs(manifest: dict, bundle: Path, component: str, method: str, inputs: list) -> None:
    """Refuse inputs whose shapes differ from the exported static shapes, naming the file and the fix."""
    entry = manifest["components"][component]
    specs = entry["methods"][method]["inputs"]
    fname = entry.get("files", {}).get(method, entry["file"])
    for spec, value in zip(specs, inputs):
        shape = list(value.shape)
        if shape != spec["shape"]:
            raise BundleError(
                f"{Path(bundle) / fname}: input '{spec['name']}' of {component}.{method} has shape {shape}, but the "
                f"bundle was exported for {spec['shape']}; pass inputs of the exported shape or re-export with "
                "matching sizes (--window-seconds)"
            )
