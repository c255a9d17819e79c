"""ONNX Runtime backend: runs the ``.onnx`` graphs of a bundle with onnxruntime on the CPU.

The LM's KV cache is an explicit array the backend holds and passes in and out of every call
(``cache`` -> ``present``), since ONNX graphs carry no state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .backend import BundleBackend, prefill_in_pieces
from .manifest import BundleError, check_inputs, stream_spec_from_manifest


class OnnxBackend(BundleBackend):
    name = "onnx"

    def __init__(self, bundle: str | Path, manifest: dict, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.bundle = Path(bundle)
        self.manifest = manifest
        self.spec = stream_spec_from_manifest(manifest["stream"])
        self.prefill_len = int(manifest["stream"]["lm_prefill_len"])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self._sessions = {}
        for comp, entry in manifest["components"].items():
            files = entry.get("files", {m: entry["file"] for m in entry["methods"]})
            for method, fname in files.items():
                path = self.bundle / fname
                try:
                    self._sessions[(comp, method)] = ort.InferenceSession(
                        str(path), options, providers=["CPUExecutionProvider"]
                    )
                except Exception as exc:  # ORT raises its own exception types for any unreadable graph
                    raise BundleError(
                        f"{path}: onnxruntime cannot load this graph ({exc}); re-export the bundle"
                    ) from exc
        cache = next(t for t in manifest["components"]["lm"]["methods"]["decode"]["inputs"] if t["name"] == "cache")
        self._cache_shape = tuple(cache["shape"])
        self.cache = np.zeros(self._cache_shape, dtype=np.float32)

    def _run(self, comp: str, method: str, feeds: dict) -> list[np.ndarray]:
        check_inputs(self.manifest, self.bundle, comp, method, list(feeds.values()))
        return self._sessions[(comp, method)].run(None, feeds)

    def lm_reset(self) -> None:
        self.cache = np.zeros(self._cache_shape, dtype=np.float32)

    def _lm(self, method: str, ids: np.ndarray, start: int) -> np.ndarray:
        name = "ids" if method == "prefill" else "token"
        start_name = "start_pos" if method == "prefill" else "pos"
        logits, self.cache = self._run(
            "lm", method, {name: ids, start_name: np.array([start], dtype=np.int64), "cache": self.cache}
        )
        return logits

    def lm_prefill(self, ids: Tensor, start_pos: int) -> Tensor:
        def piece(chunk: Tensor, start: int) -> Tensor:
            return torch.from_numpy(self._lm("prefill", chunk.reshape(1, -1).long().numpy(), start)[0])

        return prefill_in_pieces(
            piece, self.lm_decode, ids.long(), start_pos, self.prefill_len, self.spec.lm_max_seq_len
        )

    def lm_decode(self, token: int, pos: int) -> Tensor:
        return torch.from_numpy(self._lm("decode", np.array([[token]], dtype=np.int64), pos)[0])

    def dpd(self, z: Tensor, angles: Tensor, tokens: Tensor) -> Tensor:
        feeds = {"z": z.float().numpy(), "angles": angles.float().numpy(), "tokens": tokens.long().numpy()}
        return torch.from_numpy(self._run("dpd", "forward", feeds)[0])

    def vae_decode(self, z: Tensor) -> Tensor:
        return torch.from_numpy(self._run("vae_decoder", "forward", {"z": z.float().contiguous().numpy()})[0][0])

    def vae_encode(self, audio: Tensor) -> Tensor:
        if ("vae_encoder", "forward") not in self._sessions:
            raise BundleError(f"{self.bundle}: this bundle has no vae_encoder artifact (export it with --encoder)")
        return torch.from_numpy(self._run("vae_encoder", "forward", {"audio": audio.float().contiguous().numpy()})[0])

    def dpd_sampler(self, z: Tensor, angles: Tensor, target: Tensor, tokens: Tensor, guidance: Tensor) -> Tensor:
        """The unrolled T-step sampler artifact (when the bundle has one)."""
        if ("dpd_sampler", "forward") not in self._sessions:
            raise BundleError(f"{self.bundle}: this bundle has no dpd_sampler artifact")
        feeds = {
            "z": z.float().numpy(),
            "angles": angles.float().numpy(),
            "target": target.float().numpy(),
            "tokens": tokens.long().numpy(),
            "guidance": guidance.float().reshape(1).numpy(),
        }
        return torch.from_numpy(self._run("dpd_sampler", "forward", feeds)[0])
