"""Open a bundle with the backend its target needs."""

from __future__ import annotations

import platform
from pathlib import Path

from .backend import Backend
from .manifest import BundleError, load_manifest

BACKENDS = ("executorch", "onnx", "coreml")


class BackendUnavailable(RuntimeError):
    """This host cannot run the bundle's backend (Core ML off macOS/iOS)."""


def default_backend(target: str) -> str:
    return {"executorch-xnnpack": "executorch", "executorch-coreml": "executorch", "onnx": "onnx"}.get(target, "coreml")


def open_bundle(bundle: str | Path, backend: str | None = None) -> tuple[Backend, dict]:
    manifest = load_manifest(bundle)
    name = backend or default_backend(manifest["target"])
    if name not in BACKENDS:
        raise BundleError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name != default_backend(manifest["target"]):
        raise BundleError(
            f"the bundle was exported for {manifest['target']}; the {name} backend cannot run it "
            f"(use --backend {default_backend(manifest['target'])})"
        )
    if (manifest["target"] == "executorch-coreml" or name == "coreml") and platform.system() != "Darwin":
        raise BackendUnavailable("Core ML runs only on macOS/iOS; this bundle cannot run on this host")
    if name == "executorch":
        from .executorch_backend import ExecuTorchBackend

        return ExecuTorchBackend(bundle, manifest), manifest
    if name == "onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(bundle, manifest), manifest
    from .coreml_backend import CoreMLBackend

    return CoreMLBackend(bundle, manifest), manifest
