package ai.melodyedge.core

/**
 * Mirror of runtime/contract.py (the single source of truth): tests/apps/test_contract.py fails on any
 * difference. Names only; shapes come from each bundle's manifest.
 */
object BundleContract {
    const val SCHEMA_VERSION = 1
    const val FORMAT = "melody-edge-bundle"
    const val MANIFEST_FILE = "manifest.json"
    const val RNG_STREAM_TOKENS = 1
    const val RNG_STREAM_NOISE = 2
    val REQUIRED_COMPONENTS = listOf("lm", "dpd", "vae_decoder")
    val STREAM_KEYS = listOf("sample_rate", "hop_length", "latent_rate", "token_rate", "latent_channels", "chunk_frames", "chunks", "window_frames", "window_tokens", "frames_per_token", "prefix_levels", "prefix_codebook_size", "vocab_size", "null_token", "vae_context_frames", "lm_max_seq_len", "lm_prefill_len")
    val SAMPLER_KEYS = listOf("steps", "schedule", "guidance_scale", "temperature", "top_k")
    val PRESET_KEYS = listOf("name", "prompt", "tokens")
    val LM_PREFILL_INPUTS = listOf("ids", "start_pos")
    val LM_PREFILL_OUTPUTS = listOf("logits")
    val LM_DECODE_INPUTS = listOf("token", "pos")
    val LM_DECODE_OUTPUTS = listOf("logits")
    val DPD_FORWARD_INPUTS = listOf("z", "angles", "tokens")
    val DPD_FORWARD_OUTPUTS = listOf("v")
    val DPD_SAMPLER_FORWARD_INPUTS = listOf("z", "angles", "target", "tokens", "guidance")
    val DPD_SAMPLER_FORWARD_OUTPUTS = listOf("z_out")
    val VAE_DECODER_FORWARD_INPUTS = listOf("z")
    val VAE_DECODER_FORWARD_OUTPUTS = listOf("audio")
    val VAE_ENCODER_FORWARD_INPUTS = listOf("audio")
    val VAE_ENCODER_FORWARD_OUTPUTS = listOf("latent")
}
