package ai.melodyedge.core

import java.io.File

class BundleException(message: String) : Exception(message)

class Preset(val name: String, val prompt: String, val tokens: IntArray)

/** The parts of manifest.json the app needs, validated against [BundleContract]. */
class Manifest(
    val target: String,
    val recipe: String,
    val spec: StreamSpec,
    val steps: Int,
    val guidanceScale: Double,
    val presets: List<Preset>,
    val components: Map<String, Map<String, Any?>>,
    /** sampler.preferred: which sampler form the export measured as faster on its host ("unrolled" / "stepwise"). */
    val samplerPreferred: String? = null,
    /** sampler.lm_guidance_scale: classifier-free guidance inside the LM program (1 = none; older bundles lack it). */
    val lmGuidanceScale: Double = 1.0,
) {
    /**
     * T of the unrolled sampler artifact when the app should use it (the bundle has one and the export
     * did not measure T single calls as faster), else 0: runtime/backend.py BundleBackend.sample_window.
     */
    val unrolledSamplerSteps: Int
        get() = if ("dpd_sampler" in components && samplerPreferred != "stepwise") steps else 0

    companion object {
        fun load(bundleDir: File): Manifest {
            val file = File(bundleDir, BundleContract.MANIFEST_FILE)
            if (!file.isFile) {
                throw BundleException("$file not found: push a bundle exported by `melody-edge export` (see README)")
            }
            val root = try {
                parseJson(file.readText())
            } catch (e: IllegalArgumentException) {
                throw BundleException("$file is not valid JSON (${e.message}); re-export or re-push the bundle")
            }
            return parse(root, file.toString())
        }

        @Suppress("UNCHECKED_CAST")
        fun parse(root: Any?, where: String = BundleContract.MANIFEST_FILE): Manifest {
            val m = root as? Map<String, Any?> ?: throw BundleException("$where: not a JSON object")
            val version = (m["schema_version"] as? Number)?.toInt() ?: throw BundleException("$where: no schema_version")
            if (version > BundleContract.SCHEMA_VERSION) {
                throw BundleException(
                    "$where: schema $version is newer than this app understands (${BundleContract.SCHEMA_VERSION}); update the app",
                )
            }
            if (version < BundleContract.SCHEMA_VERSION) {
                throw BundleException("$where: schema $version is older than this app's; re-export the bundle")
            }
            if (m["format"] != BundleContract.FORMAT) {
                throw BundleException("$where: format ${m["format"]} is not ${BundleContract.FORMAT}")
            }
            val stream = m["stream"] as? Map<String, Any?> ?: throw BundleException("$where: no 'stream' section")
            for (k in BundleContract.STREAM_KEYS) if (k !in stream) throw BundleException("$where: stream.$k is missing")
            val sampler = m["sampler"] as? Map<String, Any?> ?: throw BundleException("$where: no 'sampler' section")
            for (k in BundleContract.SAMPLER_KEYS) if (k !in sampler) throw BundleException("$where: sampler.$k is missing")
            val comps = m["components"] as? Map<String, Map<String, Any?>> ?: throw BundleException("$where: no 'components'")
            for (c in BundleContract.REQUIRED_COMPONENTS) {
                if (c !in comps) throw BundleException("$where: component '$c' is missing")
            }
            val spec = StreamSpec(
                stream.int("sample_rate"), stream.int("hop_length"), stream.int("latent_channels"),
                stream.int("chunk_frames"), stream.int("chunks"), stream.int("frames_per_token"),
                stream.int("prefix_levels"), stream.int("prefix_codebook_size"), stream.int("vocab_size"),
                stream.int("vae_context_frames"), stream.int("lm_max_seq_len"),
            )
            val presets = (m["presets"] as? List<Map<String, Any?>> ?: emptyList()).map { p ->
                val tokens = (p["tokens"] as List<*>).map { (it as Number).toInt() }.toIntArray()
                Preset(p["name"] as String, p["prompt"] as String, tokens)
            }
            val recipe = (m["recipe"] as? Map<String, Any?>)?.get("name") as? String ?: "?"
            val preferred = sampler["preferred"] as? String
            val lmGuidance = (sampler["lm_guidance_scale"] as? Number)?.toDouble() ?: 1.0
            return Manifest(
                m["target"] as String, recipe, spec, sampler.int("steps"), sampler.dbl("guidance_scale"), presets, comps, preferred,
                lmGuidance,
            )
        }
    }
}
