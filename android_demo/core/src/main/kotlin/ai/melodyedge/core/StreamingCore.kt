package ai.melodyedge.core

import kotlin.math.ceil
import kotlin.math.cos
import kotlin.math.max
import kotlin.math.sin

/** What the platform shell runs (ExecuTorch or a trace replay). Arrays are row-major, batch first. */
interface ModelRunner {
    fun lmReset()

    /** ids of one prefill starting at [startPos] -> logits [vocab] of the last position. */
    fun lmPrefill(ids: LongArray, startPos: Int): FloatArray

    fun lmDecode(token: Long, pos: Int): FloatArray

    /** z [2, C, W], angles [2, W], tokens [2, S] (conditional, then null) -> velocity [2, C, W]. */
    fun dpd(z: FloatArray, angles: FloatArray, tokens: LongArray): FloatArray

    /** z [1, C, R + chunk + R] -> audio of the chunk's frames [chunk * hop]. */
    fun vaeDecode(z: FloatArray): FloatArray

    /**
     * The bundle's unrolled [steps]-step sampler in one call: z [1, C, W], angles [1, W], target [1, W]
     * (1 on the frames to denoise), tokens [1, S], guidance [1] -> z [1, C, W]. Only called when
     * [StreamingCore]'s unrolledSamplerSteps says the bundle has it and prefers it.
     */
    fun dpdSampler(z: FloatArray, angles: FloatArray, target: FloatArray, tokens: LongArray, guidance: Float, steps: Int): FloatArray =
        throw UnsupportedOperationException("this runner has no unrolled sampler; build StreamingCore with unrolledSamplerSteps = 0")

    /** Called with every block of noise the core draws (a replay checks it). */
    fun noiseDrawn(values: FloatArray) {}
}

class AudioChunk(
    val index: Int,
    val audio: FloatArray,
    val startSample: Long,
    val tokens: IntArray,
    val lmSeconds: Double,
    val dpdSeconds: Double,
    val vaeSeconds: Double,
)

private val HALF_PI_F = (Math.PI / 2).toFloat()

/**
 * The streaming schedule of runtime/pipeline.py, line for line: progressive first window, then
 * continuation by one chunk; the DDIM sampler with both guidance passes batched; VAE decode of the
 * chunk whose right context is final. [emit] returns false to stop (the Stop button).
 *
 * [unrolledSamplerSteps]: T of the bundle's unrolled sampler when the manifest prefers it
 * ([Manifest.unrolledSamplerSteps]), else 0; a generation with that many steps makes one
 * [ModelRunner.dpdSampler] call per chunk instead of T [ModelRunner.dpd] calls, as
 * runtime/backend.py BundleBackend.sample_window does.
 */
class StreamingCore(private val runner: ModelRunner, val spec: StreamSpec, val unrolledSamplerSteps: Int = 0) {
    fun numChunks(seconds: Double): Int {
        val latentRate = spec.sampleRate.toDouble() / spec.hopLength
        return max(1, ceil(seconds * latentRate / spec.chunkFrames - 1e-9).toInt())
    }

    fun stream(prefixCodes: IntArray, settings: GenerationSettings, emit: (AudioChunk) -> Boolean) {
        val s = spec
        require(prefixCodes.size == s.prefixLevels) {
            "expected ${s.prefixLevels} conditioning tokens, got ${prefixCodes.size}"
        }
        require(prefixCodes.all { it in 0 until s.prefixCodebookSize }) {
            "conditioning tokens must be integers in [0, ${s.prefixCodebookSize})"
        }
        val ch = s.latentChannels
        val c = s.chunkFrames
        val r = s.vaeContextFrames
        val w = s.windowFrames
        val nTok = s.windowTokens
        val p = s.prefixLevels
        val totalSamples = Math.round(settings.seconds * s.sampleRate)
        val nChunks = numChunks(settings.seconds)
        val schedules = mapOf(0 to angleSchedule(settings.stepsFor(0)), 1 to angleSchedule(settings.steps))
        val tokRng = PortableRng(settings.seed, RngStreams.TOKENS)
        val noiseRng = PortableRng(settings.seed, RngStreams.NOISE)

        fun noise(frames: Int): FloatArray = noiseRng.normal(ch * frames).also { runner.noiseDrawn(it) }

        var zWin = noise(w) // [C, W] channel-major
        val angles = FloatArray(w) { HALF_PI_F }
        val tokens = LongArray(nTok) { s.nullToken }
        var history = FloatArray(ch * 2 * r) // final frames before the window, [C, 2R]
        var firstChunk = 0

        runner.lmReset()
        val prefixIds = LongArray(p) { s.vocabSize.toLong() + it.toLong() * s.prefixCodebookSize + prefixCodes[it] }
        var nextLogits = runner.lmPrefill(prefixIds, 0)
        val prefixLogits = nextLogits
        var pending: Long? = null
        var emitted = 0L
        var j = 0

        for (g in 0 until nChunks) {
            val t0 = System.nanoTime()
            if (g >= s.chunks) {
                val (dropLo, dropHi) = s.chunkTokenRange(firstChunk)
                val nDrop = dropHi - dropLo
                if (r > 0) history = lastFrames(history, 2 * r, zWin, w, c, 2 * r)
                val fresh = noise(c)
                val shifted = FloatArray(ch * w)
                for (k in 0 until ch) {
                    System.arraycopy(zWin, k * w + c, shifted, k * w, w - c)
                    System.arraycopy(fresh, k * c, shifted, k * w + w - c, c)
                }
                zWin = shifted
                System.arraycopy(angles, c, angles, 0, w - c)
                angles.fill(HALF_PI_F, w - c, w)
                System.arraycopy(tokens, nDrop, tokens, 0, nTok - nDrop)
                tokens.fill(s.nullToken, nTok - nDrop, nTok)
                firstChunk += 1
                val kept = nTok - nDrop
                nextLogits = if (kept > 0) runner.lmPrefill(tokens.copyOfRange(0, kept), p) else prefixLogits
                pending = null
            }
            j = g - firstChunk
            val (lo, hi) = s.chunkTokenRange(g)
            val base = s.chunkTokenRange(firstChunk).first
            val newTokens = IntArray(hi - lo)
            for (i in (lo - base) until (hi - base)) {
                pending?.let { nextLogits = runner.lmDecode(it, p + i - 1) }
                val tok = sampleToken(nextLogits, settings.temperature, settings.topK, tokRng.uniform())
                tokens[i] = tok.toLong()
                newTokens[i - (lo - base)] = tok
                pending = tok.toLong()
            }
            val t1 = System.nanoTime()

            angles.fill(HALF_PI_F, j * c, (j + 1) * c)
            val steps = settings.stepsFor(g)
            zWin = if (steps == unrolledSamplerSteps) {
                val target = FloatArray(w).also { it.fill(1f, j * c, (j + 1) * c) }
                runner.dpdSampler(zWin, angles.copyOf(), target, tokens.copyOf(), settings.guidanceScale.toFloat(), steps)
            } else {
                ddimSample(zWin, angles, j * c, (j + 1) * c, tokens, settings.guidanceScale, schedules.getValue(minOf(g, 1)))
            }
            angles.fill(0f, j * c, (j + 1) * c)
            val t2 = System.nanoTime()

            val final = lastFrames(history, 2 * r, zWin, w, (j + 1) * c, c + 2 * r)
            val audio = runner.vaeDecode(final)
            val skip = if (g == 0) r * s.hopLength else 0
            // In Long: an "until Stop" run asks for hours, more samples than an Int holds at 48 kHz.
            val n = minOf((audio.size - skip).toLong(), max(0L, totalSamples - emitted)).toInt()
            val out = audio.copyOfRange(skip, skip + n)
            val t3 = System.nanoTime()
            val chunk = AudioChunk(g, out, emitted, newTokens, (t1 - t0) / 1e9, (t2 - t1) / 1e9, (t3 - t2) / 1e9)
            emitted += out.size
            if (!emit(chunk)) return
        }
        if (r > 0 && emitted < totalSamples) {
            val t0 = System.nanoTime()
            val tail = lastFrames(history, 2 * r, zWin, w, (j + 1) * c, 2 * r)
            val window = FloatArray(ch * (2 * r + c))
            for (k in 0 until ch) System.arraycopy(tail, k * 2 * r, window, k * (2 * r + c), 2 * r)
            val audio = runner.vaeDecode(window)
            val n = minOf(r * s.hopLength.toLong(), totalSamples - emitted).toInt()
            emit(AudioChunk(nChunks, audio.copyOfRange(0, n), emitted, IntArray(0), 0.0, 0.0, (System.nanoTime() - t0) / 1e9))
        }
    }

    /** Per channel: the last [len] frames of history [C, histLen] followed by z[:, :n] of a [C, zLen] array. */
    private fun lastFrames(history: FloatArray, histLen: Int, z: FloatArray, zLen: Int, n: Int, len: Int): FloatArray {
        val ch = spec.latentChannels
        val out = FloatArray(ch * len)
        for (k in 0 until ch) {
            for (t in 0 until len) {
                val src = histLen + n - len + t // index into concat(history, z[:n])
                out[k * len + t] = if (src < histLen) history[k * histLen + src] else z[k * zLen + src - histLen]
            }
        }
        return out
    }

    /** models/diffusion.py ddim_sample on frames [lo, hi) of the window, guidance batched as one call. */
    private fun ddimSample(
        z0: FloatArray,
        angles: FloatArray,
        lo: Int,
        hi: Int,
        tokens: LongArray,
        guidance: Double,
        schedule: DoubleArray,
    ): FloatArray {
        val ch = spec.latentChannels
        val w = spec.windowFrames
        val scale = guidance.toFloat()
        var z = z0
        val batchTokens = LongArray(2 * tokens.size) { if (it < tokens.size) tokens[it] else spec.nullToken }
        for (step in schedule) {
            val zz = FloatArray(2 * ch * w).also {
                System.arraycopy(z, 0, it, 0, ch * w)
                System.arraycopy(z, 0, it, ch * w, ch * w)
            }
            val aa = FloatArray(2 * w).also {
                System.arraycopy(angles, 0, it, 0, w)
                System.arraycopy(angles, 0, it, w, w)
            }
            val v = runner.dpd(zz, aa, batchTokens)
            val wf = step.toFloat()
            val next = z.copyOf()
            for (f in lo until hi) {
                val cs = cos(wf)
                val sn = sin(wf)
                for (k in 0 until ch) {
                    val i = k * w + f
                    val vu = v[ch * w + i]
                    val vg = vu + scale * (v[i] - vu)
                    next[i] = cs * z[i] - sn * vg
                }
                angles[f] = max(angles[f] - wf, 0f)
            }
            z = next
        }
        return z
    }
}
