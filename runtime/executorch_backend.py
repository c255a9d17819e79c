"""ExecuTorch backend: runs the ``.pte`` programs of a bundle through the ExecuTorch Python runtime."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .backend import BundleBackend, prefill_in_pieces
from .manifest import BundleError, check_inputs, stream_spec_from_manifest


class ExecuTorchBackend(BundleBackend):
    name = "executorch"

    def __init__(self, bundle: str | Path, manifest: dict) -> None:
        from executorch.runtime import Runtime

        self.bundle = Path(bundle)
        self.manifest = manifest
        self.spec = stream_spec_from_manifest(manifest["stream"])
        self.prefill_len = int(manifest["stream"]["lm_prefill_len"])
        runtime = Runtime.get()
        # Programs must outlive their methods (the runtime crashes otherwise): keep them on self.
        self._programs = {}
        self._methods = {}
        for comp, entry in manifest["components"].items():
            path = self.bundle / entry["file"]
            try:
                program = runtime.load_program(str(path))
            except Exception as exc:  # the runtime raises bare RuntimeErrors for any bad file
                raise BundleError(f"{path}: ExecuTorch cannot load this program ({exc}); re-export the bundle") from exc
            self._programs[comp] = program
            for method in entry["methods"]:
                self._methods[(comp, method)] = program.load_method(method)

    def _run(self, comp: str, method: str, inputs: list[Tensor]) -> Tensor:
        check_inputs(self.manifest, self.bundle, comp, method, inputs)
        return self._methods[(comp, method)].execute(inputs)[0]

    def lm_reset(self) -> None:
        # The cache needs no clearing: every read is masked to positions written in this stream.
        pass

    def lm_prefill(self, ids: Tensor, start_pos: int) -> Tensor:
        def piece(chunk: Tensor, start: int) -> Tensor:
            return self._run("lm", "prefill", [chunk.reshape(1, -1).long(), torch.tensor([start])])[0]

        return prefill_in_pieces(
            piece, self.lm_decode, ids.long(), start_pos, self.prefill_len, self.spec.lm_max_seq_len
        )

    def lm_decode(self, token: int, pos: int) -> Tensor:
        return self._run("lm", "decode", [torch.tensor([[token]], dtype=torch.long), torch.tensor([pos])])[0]

    def dpd(self, z: Tensor, angles: Tensor, tokens: Tensor) -> Tensor:
        return self._run("dpd", "forward", [z.contiguous(), angles.contiguous(), tokens.long().contiguous()])

    def vae_decode(self, z: Tensor) -> Tensor:
        return self._run("vae_decoder", "forward", [z.contiguous()])[0]

    def vae_encode(self, audio: Tensor) -> Tensor:
        if ("vae_encoder", "forward") not in self._methods:
            raise BundleError(f"{self.bundle}: this bundle has no vae_encoder artifact (export it with --encoder)")
        return self._run("vae_encoder", "forward", [audio.float().contiguous()])

    def dpd_sampler(self, z: Tensor, angles: Tensor, target: Tensor, tokens: Tensor, guidance: Tensor) -> Tensor:
        """The unrolled T-step sampler artifact (when the bundle has one)."""
        if ("dpd_sampler", "forward") not in self._methods:
            raise BundleError(f"{self.bundle}: this bundle has no dpd_sampler artifact")
        return self._run("dpd_sampler", "forward", [z, angles, target, tokens.long(), guidance])
