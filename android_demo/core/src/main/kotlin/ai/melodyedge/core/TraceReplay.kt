package ai.melodyedge.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs

/** One array of a trace record: float32 or int64 data with its shape. */
class TraceArray(val shape: IntArray, val floats: FloatArray?, val longs: LongArray?)

class TraceRecord(val event: String, val arrays: Map<String, TraceArray>)

class Trace(val header: Map<String, Any?>, val records: List<TraceRecord>) {
    val spec: StreamSpec
        get() {
            val sp = header.obj("spec")
            return StreamSpec(
                sp.int("sample_rate"), sp.int("hop_length"), sp.int("latent_channels"), sp.int("chunk_frames"),
                sp.int("chunks"), sp.int("frames_per_token"), sp.int("prefix_levels"), sp.int("prefix_codebook_size"),
                sp.int("vocab_size"), sp.int("vae_context_frames"), sp.int("lm_max_seq_len"),
            )
        }
    val settings: GenerationSettings
        get() {
            val st = header.obj("settings")
            return GenerationSettings(
                st.dbl("seconds"), st.int("steps"), st.dbl("guidance_scale"), st.dbl("temperature"),
                st.int("top_k"), st.int("seed").toLong(), (st["first_steps"] as? Number)?.toInt() ?: 0,
            )
        }
    val prefixCodes: IntArray get() = (header["prefix_codes"] as List<*>).map { (it as Number).toInt() }.toIntArray()

    /** Whether the runtime was allowed the bundle's unrolled sampler (it used it where the manifest prefers it). */
    val samplerArtifact: Boolean get() = header["sampler_artifact"] == true

    companion object {
        /** Reads the format written by runtime/trace.py. */
        fun read(file: File): Trace {
            val buf = ByteBuffer.wrap(file.readBytes()).order(ByteOrder.LITTLE_ENDIAN)
            val magic = ByteArray(8).also { buf.get(it) }
            require(String(magic, Charsets.US_ASCII) == "MELTRACE") { "$file: not a melody-edge trace" }
            val version = buf.int
            require(version == 1) { "$file: trace version $version, this reader knows 1" }
            val head = ByteArray(buf.int).also { buf.get(it) }
            @Suppress("UNCHECKED_CAST")
            val header = parseJson(String(head, Charsets.UTF_8)) as Map<String, Any?>
            val records = ArrayList<TraceRecord>()
            while (buf.hasRemaining()) {
                val event = ascii(buf)
                val count = buf.get().toInt() and 0xff
                val arrays = LinkedHashMap<String, TraceArray>()
                repeat(count) {
                    val name = ascii(buf)
                    val dtype = buf.get().toInt()
                    val ndim = buf.get().toInt()
                    val shape = IntArray(ndim) { buf.int }
                    val size = shape.fold(1) { a, b -> a * b }
                    arrays[name] = when (dtype) {
                        1 -> TraceArray(shape, FloatArray(size) { buf.float }, null)
                        2 -> TraceArray(shape, null, LongArray(size) { buf.long })
                        else -> throw IllegalArgumentException("$file: unknown dtype $dtype")
                    }
                }
                records.add(TraceRecord(event, arrays))
            }
            return Trace(header, records)
        }

        private fun ascii(buf: ByteBuffer): String {
            val n = buf.get().toInt() and 0xff
            return String(ByteArray(n).also { buf.get(it) }, Charsets.US_ASCII)
        }
    }
}

class TraceMismatch(message: String) : AssertionError(message)

/**
 * Serves a trace's recorded outputs in order and fails as soon as the core asks for a call that
 * differs from the recorded one: the event, integer inputs exactly, float inputs within [tolerance]
 * (float32 cos/sin may differ by an ulp between torch and the JVM).
 */
class ReplayRunner(private val trace: Trace, private val tolerance: Float = 1e-5f) : ModelRunner {
    private var cursor = 0
    var maxFloatError = 0f
        private set
    val done: Boolean get() = cursor == trace.records.size

    private fun next(event: String): TraceRecord {
        if (cursor >= trace.records.size) throw TraceMismatch("call $cursor: the core called $event after the trace ended")
        val rec = trace.records[cursor]
        if (rec.event != event) throw TraceMismatch("call $cursor: the core called $event, the runtime called ${rec.event}")
        cursor++
        return rec
    }

    private fun checkLongs(where: String, got: LongArray, want: TraceArray) {
        val w = want.longs!!
        if (!got.contentEquals(w)) {
            val i = got.indices.firstOrNull { it >= w.size || got[it] != w[it] } ?: w.size
            throw TraceMismatch("$where: differs at index $i (core ${got.getOrNull(i)}, runtime ${w.getOrNull(i)}), sizes ${got.size}/${w.size}")
        }
    }

    private fun checkFloats(where: String, got: FloatArray, want: TraceArray, exact: Boolean = false) {
        val w = want.floats!!
        if (got.size != w.size) throw TraceMismatch("$where: size ${got.size}, runtime ${w.size}")
        for (i in got.indices) {
            val err = abs(got[i] - w[i])
            val limit = if (exact) 0f else tolerance * (1f + abs(w[i]))
            if (!(err <= limit)) throw TraceMismatch("$where: index $i core ${got[i]} runtime ${w[i]}")
            if (err > maxFloatError) maxFloatError = err
        }
    }

    private fun scalar(rec: TraceRecord, key: String): Long = rec.arrays.getValue(key).longs!![0]

    override fun lmReset() {}

    override fun lmPrefill(ids: LongArray, startPos: Int): FloatArray {
        val rec = next("lm_prefill")
        checkLongs("lm_prefill ids (call ${cursor - 1})", ids, rec.arrays.getValue("ids"))
        if (scalar(rec, "start_pos") != startPos.toLong()) throw TraceMismatch("lm_prefill start_pos $startPos, runtime ${scalar(rec, "start_pos")}")
        return rec.arrays.getValue("logits").floats!!
    }

    override fun lmDecode(token: Long, pos: Int): FloatArray {
        val rec = next("lm_decode")
        if (scalar(rec, "token") != token || scalar(rec, "pos") != pos.toLong()) {
            throw TraceMismatch("lm_decode (call ${cursor - 1}): core token $token pos $pos, runtime ${scalar(rec, "token")} pos ${scalar(rec, "pos")}")
        }
        return rec.arrays.getValue("logits").floats!!
    }

    override fun dpd(z: FloatArray, angles: FloatArray, tokens: LongArray): FloatArray {
        val rec = next("dpd")
        val where = "dpd (call ${cursor - 1})"
        checkLongs("$where tokens", tokens, rec.arrays.getValue("tokens"))
        checkFloats("$where angles", angles, rec.arrays.getValue("angles"), exact = true)
        checkFloats("$where z", z, rec.arrays.getValue("z"))
        return rec.arrays.getValue("v").floats!!
    }

    override fun dpdSampler(z: FloatArray, angles: FloatArray, target: FloatArray, tokens: LongArray, guidance: Float, steps: Int): FloatArray {
        val rec = next("dpd_sampler")
        val where = "dpd_sampler (call ${cursor - 1})"
        checkLongs("$where tokens", tokens, rec.arrays.getValue("tokens"))
        checkFloats("$where angles", angles, rec.arrays.getValue("angles"), exact = true)
        checkFloats("$where target", target, rec.arrays.getValue("target"), exact = true)
        checkFloats("$where guidance", floatArrayOf(guidance), rec.arrays.getValue("guidance"), exact = true)
        if (scalar(rec, "steps") != steps.toLong()) throw TraceMismatch("$where: steps $steps, runtime ${scalar(rec, "steps")}")
        checkFloats("$where z", z, rec.arrays.getValue("z"))
        return rec.arrays.getValue("z_out").floats!!
    }

    override fun vaeDecode(z: FloatArray): FloatArray {
        val rec = next("vae_decode")
        checkFloats("vae_decode z (call ${cursor - 1})", z, rec.arrays.getValue("z"))
        return rec.arrays.getValue("audio").floats!!
    }

    override fun noiseDrawn(values: FloatArray) {
        val rec = next("noise")
        checkFloats("noise (call ${cursor - 1})", values, rec.arrays.getValue("values"))
    }
}
