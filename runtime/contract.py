"""The bundle contract the demo apps mirror: names, not shapes (shapes are in each manifest).

One source of truth for `android_demo/core/.../BundleContract.kt` and `ios_demo/Core/BundleContract.swift`:
tests/apps/test_contract.py fails when either differs from :func:`flat_constants`, and when the
exporter (`export/adapters.method_specs`) or an exported bundle's manifest differs from this module.
"""

from __future__ import annotations

from .manifest import MANIFEST, SCHEMA_VERSION
from .rng import STREAM_NOISE, STREAM_TOKENS

FORMAT = "melody-edge-bundle"
# component -> method -> (input names, output names)
COMPONENTS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "lm": {"prefill": (("ids", "start_pos"), ("logits",)), "decode": (("token", "pos"), ("logits",))},
    "dpd": {"forward": (("z", "angles", "tokens"), ("v",))},
    "dpd_sampler": {"forward": (("z", "angles", "target", "tokens", "guidance"), ("z_out",))},
    "vae_decoder": {"forward": (("z",), ("audio",))},
    "vae_encoder": {"forward": (("audio",), ("latent",))},
}
REQUIRED_COMPONENTS = ("lm", "dpd", "vae_decoder")
# ONNX carries the LM's KV cache as explicit tensors (other targets keep it inside the program).
ONNX_LM_STATE = ("cache", "present")
STREAM_KEYS = (
    "sample_rate", "hop_length", "latent_rate", "token_rate", "latent_channels", "chunk_frames", "chunks",
    "window_frames", "window_tokens", "frames_per_token", "prefix_levels", "prefix_codebook_size", "vocab_size",
    "null_token", "vae_context_frames", "lm_max_seq_len", "lm_prefill_len",
)  # fmt: skip
SAMPLER_KEYS = ("steps", "schedule", "guidance_scale", "temperature", "top_k")
PRESET_KEYS = ("name", "prompt", "tokens")


def flat_constants() -> dict[str, object]:
    """The constants each app's contract file declares, by name."""
    out: dict[str, object] = {
        "SCHEMA_VERSION": SCHEMA_VERSION,
        "FORMAT": FORMAT,
        "MANIFEST_FILE": MANIFEST,
        "RNG_STREAM_TOKENS": STREAM_TOKENS,
        "RNG_STREAM_NOISE": STREAM_NOISE,
        "REQUIRED_COMPONENTS": list(REQUIRED_COMPONENTS),
        "STREAM_KEYS": list(STREAM_KEYS),
        "SAMPLER_KEYS": list(SAMPLER_KEYS),
        "PRESET_KEYS": list(PRESET_KEYS),
    }
    for comp, methods in COMPONENTS.items():
        for method, (inputs, outputs) in methods.items():
            key = f"{comp}_{method}".upper()
            out[f"{key}_INPUTS"] = list(inputs)
            out[f"{key}_OUTPUTS"] = list(outputs)
    return out
