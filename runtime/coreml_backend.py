"""Core ML backend: runs the ``.mlpackage`` components of a ``coreml`` bundle with ``MLModel.predict``.

macOS 15+ only (iOS 18 mlprograms with state); Core ML does not predict on other hosts, so this module
is not exercised by the Linux test suite. The LM package holds two functions, ``prefill`` and
``decode``, that declare the same KV-cache state; one ``MLState`` per stream is made from the decode
function and passed to both (the state is zero-initialised by Core ML, and every read is masked to the
positions written in this stream, so a fresh state is only needed to free memory).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .backend import BundleBackend, prefill_in_pieces
from .manifest import BundleError, stream_spec_from_manifest

NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64}
COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")


class CoreMLBackend(BundleBackend):
    name = "coreml"

    def __init__(self, bundle: str | Path, manifest: dict, compute_units: str = "all") -> None:
        if platform.system() != "Darwin":
            from .open import BackendUnavailable

            raise BackendUnavailable("Core ML runs only on macOS/iOS; this bundle cannot run on this host")
        if compute_units not in COMPUTE_UNITS:
            raise BundleError(f"unknown compute units {compute_units!r}; choose one of {', '.join(COMPUTE_UNITS)}")
        import coremltools as ct

        self.bundle = Path(bundle)
        self.manifest = manifest
        self.spec = stream_spec_from_manifest(manifest["stream"])
        self.prefill_len = int(manifest["stream"]["lm_prefill_len"])
        units = getattr(ct.ComputeUnit, compute_units.upper())
        self._models: dict[tuple[str, str], object] = {}
        self._specs: dict[tuple[str, str], dict] = {}
        for comp, entry in manifest["components"].items():
            files = entry.get("files") or {m: entry["file"] for m in entry["methods"]}
            if comp == "lm" and len(set(files.values())) > 1:
                # Two packages means two state schemas: decode would not see what prefill wrote.
                raise BundleError(
                    f"{self.bundle}: the LM is split over {sorted(set(files.values()))}; the Core ML backend "
                    "needs prefill and decode as functions of one package (re-export with coremltools >= 8)"
                )
            for method, spec in entry["methods"].items():
                path = self.bundle / files[method]
                # A multifunction package is loaded once per function; a single-function one as is.
                kwargs = {"function_name": method} if len(entry["methods"]) > 1 else {}
                try:
                    self._models[(comp, method)] = ct.models.MLModel(str(path), compute_units=units, **kwargs)
                except Exception as exc:  # Core ML raises its own error types for any unloadable package
                    raise BundleError(
                        f"{path}: Core ML cannot load this package ({exc}); re-export the bundle"
                    ) from exc
                self._specs[(comp, method)] = spec
        self._state = None
        self.lm_reset()

    def _run(self, comp: str, method: str, inputs: list, state=None) -> list[np.ndarray]:
        """Positional inputs -> outputs in manifest order (names and dtypes come from the manifest)."""
        spec = self._specs[(comp, method)]
        feeds = {
            t["name"]: np.ascontiguousarray(np.asarray(x).reshape(t["shape"]), dtype=NP_DTYPES[t["dtype"]])
            for t, x in zip(spec["inputs"], inputs)
        }
        model = self._models[(comp, method)]
        out = model.predict(feeds, state=state) if state is not None else model.predict(feeds)
        return [np.asarray(out[t["name"]], dtype=np.float32) for t in spec["outputs"]]

    def lm_reset(self) -> None:
        self._state = self._models[("lm", "decode")].make_state()

    def lm_prefill(self, ids: Tensor, start_pos: int) -> Tensor:
        def piece(chunk: Tensor, start: int) -> Tensor:
            (logits,) = self._run("lm", "prefill", [chunk.numpy(), [start]], self._state)
            return torch.from_numpy(logits[0])

        return prefill_in_pieces(
            piece, self.lm_decode, ids.long(), start_pos, self.prefill_len, self.spec.lm_max_seq_len
        )

    def lm_decode(self, token: int, pos: int) -> Tensor:
        (logits,) = self._run("lm", "decode", [[[token]], [pos]], self._state)
        return torch.from_numpy(logits[0])

    def dpd(self, z: Tensor, angles: Tensor, tokens: Tensor) -> Tensor:
        (v,) = self._run("dpd", "forward", [z.float().numpy(), angles.float().numpy(), tokens.long().numpy()])
        return torch.from_numpy(v)

    def vae_decode(self, z: Tensor) -> Tensor:
        (audio,) = self._run("vae_decoder", "forward", [z.float().numpy()])
        return torch.from_numpy(audio[0])

    def vae_encode(self, audio: Tensor) -> Tensor:
        if ("vae_encoder", "forward") not in self._models:
            raise BundleError(f"{self.bundle}: this bundle has no vae_encoder artifact (export it with --encoder)")
        (latent,) = self._run("vae_encoder", "forward", [audio.float().numpy()])
        return torch.from_numpy(latent)

    def dpd_sampler(self, z: Tensor, angles: Tensor, target: Tensor, tokens: Tensor, guidance: Tensor) -> Tensor:
        """The unrolled T-step sampler artifact (when the bundle has one)."""
        if ("dpd_sampler", "forward") not in self._models:
            raise BundleError(f"{self.bundle}: this bundle has no dpd_sampler artifact")
        inputs = [z.float().numpy(), angles.float().numpy(), target.float().numpy(), tokens.long().numpy()]
        (out,) = self._run("dpd_sampler", "forward", [*inputs, guidance.float().reshape(1).numpy()])
        return torch.from_numpy(out)

    def close(self) -> None:
        self._models.clear()
        self._state = None
