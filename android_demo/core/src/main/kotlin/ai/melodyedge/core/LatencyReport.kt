package ai.melodyedge.core

import kotlin.math.ceil
import kotlin.math.floor

/** `melody-edge bench`'s count of MusicLM's network passes per second of audio (runtime/bench.py). */
const val MUSICLM_NFE_PER_SECOND = 25 + 200 + 400

/** The calls that are network forward passes (a dpd_sampler call adds its T passes to "dpd"). */
val NFE_CALLS = listOf("dpd", "lm_decode", "lm_prefill", "vae_decode")

/** Wraps the shell's runner to count network calls, as runtime/bench.py's recorder does. */
class CountingRunner(private val inner: ModelRunner) : ModelRunner by inner {
    val counts = linkedMapOf("dpd" to 0, "lm_decode" to 0, "lm_prefill" to 0, "vae_decode" to 0, "dpd_sampler" to 0)

    override fun lmPrefill(ids: LongArray, startPos: Int): FloatArray = inner.lmPrefill(ids, startPos).also { bump("lm_prefill") }

    override fun lmDecode(token: Long, pos: Int): FloatArray = inner.lmDecode(token, pos).also { bump("lm_decode") }

    override fun dpd(z: FloatArray, angles: FloatArray, tokens: LongArray): FloatArray = inner.dpd(z, angles, tokens).also { bump("dpd") }

    override fun vaeDecode(z: FloatArray): FloatArray = inner.vaeDecode(z).also { bump("vae_decode") }

    // One call, but [steps] guided network passes inside (counted as dpd passes, as runtime/bench.py does).
    override fun dpdSampler(z: FloatArray, angles: FloatArray, target: FloatArray, tokens: LongArray, guidance: Float, steps: Int): FloatArray =
        inner.dpdSampler(z, angles, target, tokens, guidance, steps).also {
            bump("dpd_sampler")
            counts["dpd"] = counts.getValue("dpd") + steps
        }

    private fun bump(k: String) {
        counts[k] = counts.getValue(k) + 1
    }
}

/** numpy.percentile with linear interpolation. */
fun percentile(values: List<Double>, q: Double): Double {
    val s = values.sorted()
    val pos = (s.size - 1) * q / 100.0
    val lo = floor(pos).toInt()
    val hi = ceil(pos).toInt()
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
}

/**
 * Per-chunk entries a report keeps: the most recent 240 (10 min of 2.5 s chunks), so a run "until Stop"
 * holds bounded memory. Totals (seconds, wall, RTF, tokens/s, DPD step, NFE, finite, peak RSS) cover the
 * whole run; the chunk latency p50/p95 and the VAE median cover the kept entries (all of them up to 10 min).
 */
const val MAX_REPORT_CHUNKS = 240

/**
 * Collects what `melody-edge bench --json` reports, so figures from a phone compare with host figures:
 * the same schema (runtime/bench.schema.json, checked in tests/apps). Feed it every emitted chunk.
 */
class LatencyReport(
    private val name: String,
    private val backend: String,
    private val model: String,
    private val steps: Int,
    private val spec: StreamSpec,
    private val rssMb: () -> Double,
    private val clock: () -> Double = { System.nanoTime() / 1e9 },
    private val maxChunks: Int = MAX_REPORT_CHUNKS,
) {
    private val chunks = ArrayDeque<Map<String, Any?>>() // the last [maxChunks] entries
    private val start = clock()
    private var last = start
    private var firstAudio: Double? = null
    private var audioSeconds = 0.0
    private var peakRss = 0.0

    // Running totals over every full chunk (the final flush has no tokens), dropped entries included.
    private var lmTotal = 0.0
    private var dpdTotal = 0.0
    private var tokensTotal = 0
    private var allFinite = true

    fun onChunk(chunk: AudioChunk) {
        val now = clock()
        if (firstAudio == null) firstAudio = now - start
        val rss = rssMb()
        peakRss = maxOf(peakRss, rss)
        val seconds = chunk.audio.size.toDouble() / spec.sampleRate
        audioSeconds += seconds
        val finite = chunk.audio.all { it.isFinite() }
        allFinite = allFinite && finite
        if (chunk.tokens.isNotEmpty()) {
            lmTotal += chunk.lmSeconds
            dpdTotal += chunk.dpdSeconds
            tokensTotal += chunk.tokens.size
        }
        chunks.addLast(
            linkedMapOf(
                "index" to chunk.index, "latency_s" to now - last, "lm_s" to chunk.lmSeconds, "dpd_s" to chunk.dpdSeconds,
                "vae_s" to chunk.vaeSeconds, "tokens" to chunk.tokens.size, "audio_s" to seconds,
                "finite" to finite, "rss_mb" to rss,
            ),
        )
        if (chunks.size > maxChunks) chunks.removeFirst()
        last = now
    }

    fun toJson(counts: Map<String, Int>, machine: Map<String, Any?>, created: String, bundleBytes: Long?): String {
        val wall = clock() - start
        val full = chunks.filter { (it["tokens"] as Int) > 0 } // kept entries only: the percentiles' sample
        val lat = full.map { it["latency_s"] as Double }
        val nfe = NFE_CALLS.sumOf { counts[it] ?: 0 }
        val run = linkedMapOf(
            "name" to name, "kind" to "bundle", "backend" to backend, "model" to model, "seconds" to audioSeconds,
            "steps" to steps, "time_to_first_audio_s" to firstAudio, "wall_s" to wall,
            "real_time_factor" to if (audioSeconds > 0) wall / audioSeconds else null,
            "chunk_latency_p50_s" to if (lat.isEmpty()) null else percentile(lat, 50.0),
            "chunk_latency_p95_s" to if (lat.isEmpty()) null else percentile(lat, 95.0),
            "chunk_audio_s" to spec.chunkFrames * spec.hopLength.toDouble() / spec.sampleRate,
            "lm_tokens_per_s" to if (lmTotal > 0) tokensTotal / lmTotal else null,
            "dpd_step_s" to dpdTotal / maxOf(counts["dpd"] ?: 0, 1),
            "vae_chunk_s" to if (full.isEmpty()) null else percentile(full.map { it["vae_s"] as Double }, 50.0),
            "peak_rss_mb" to peakRss, "bundle_bytes" to bundleBytes,
            "nfe_per_10s" to nfe * 10.0 / maxOf(audioSeconds, 1e-9),
            "musiclm_nfe_per_10s" to MUSICLM_NFE_PER_SECOND * 10, "audio_finite" to allFinite,
            "speedup_vs_eager" to null, "sampler_artifact_calls" to (counts["dpd_sampler"] ?: 0), "chunks" to chunks.toList(),
        )
        val root = linkedMapOf(
            "schema_version" to 1, "created" to created, "machine" to machine, "seconds" to audioSeconds, "runs" to listOf(run),
        )
        return toJsonText(root)
    }
}

fun toJsonText(value: Any?): String = when (value) {
    null -> "null"
    is String -> "\"" + value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\""
    is Boolean, is Int, is Long -> value.toString()
    is Double -> if (value.isFinite()) value.toString() else "null"
    is Float -> if (value.isFinite()) value.toDouble().toString() else "null"
    is Map<*, *> -> value.entries.joinToString(",", "{", "}") { toJsonText(it.key.toString()) + ":" + toJsonText(it.value) }
    is List<*> -> value.joinToString(",", "[", "]") { toJsonText(it) }
    else -> throw IllegalArgumentException("cannot write ${value::class} as JSON")
}
