// Mirror of runtime/contract.py (the single source of truth): tests/apps/test_contract.py fails on any
// difference. Names only; shapes come from each bundle's manifest.
// The constants sit in a `public extension` so that each line still starts with `static let` (the form
// test_contract.py reads) while the app module can see them.

public enum BundleContract {}

public extension BundleContract {
    static let SCHEMA_VERSION = 1
    static let FORMAT = "melody-edge-bundle"
    static let MANIFEST_FILE = "manifest.json"
    static let RNG_STREAM_TOKENS = 1
    static let RNG_STREAM_NOISE = 2
    static let REQUIRED_COMPONENTS = ["lm", "dpd", "vae_decoder"]
    static let STREAM_KEYS = ["sample_rate", "hop_length", "latent_rate", "token_rate", "latent_channels", "chunk_frames", "chunks", "window_frames", "window_tokens", "frames_per_token", "prefix_levels", "prefix_codebook_size", "vocab_size", "null_token", "vae_context_frames", "lm_max_seq_len", "lm_prefill_len"]
    static let SAMPLER_KEYS = ["steps", "schedule", "guidance_scale", "temperature", "top_k"]
    static let PRESET_KEYS = ["name", "prompt", "tokens"]
    static let LM_PREFILL_INPUTS = ["ids", "start_pos"]
    static let LM_PREFILL_OUTPUTS = ["logits"]
    static let LM_DECODE_INPUTS = ["token", "pos"]
    static let LM_DECODE_OUTPUTS = ["logits"]
    static let DPD_FORWARD_INPUTS = ["z", "angles", "tokens"]
    static let DPD_FORWARD_OUTPUTS = ["v"]
    static let DPD_SAMPLER_FORWARD_INPUTS = ["z", "angles", "target", "tokens", "guidance"]
    static let DPD_SAMPLER_FORWARD_OUTPUTS = ["z_out"]
    static let VAE_DECODER_FORWARD_INPUTS = ["z"]
    static let VAE_DECODER_FORWARD_OUTPUTS = ["audio"]
    static let VAE_ENCODER_FORWARD_INPUTS = ["audio"]
    static let VAE_ENCODER_FORWARD_OUTPUTS = ["latent"]
}
