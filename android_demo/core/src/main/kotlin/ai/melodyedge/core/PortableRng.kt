package ai.melodyedge.core

import kotlin.math.PI
import kotlin.math.cos
import kotlin.math.ln1p
import kotlin.math.sin
import kotlin.math.sqrt

/** Streams of the Python runtime's `PortableRng` (runtime/rng.py): SplitMix64 over (seed, stream, counter). */
object RngStreams {
    const val TOKENS = 1L
    const val NOISE = 2L
}

// The constants of runtime/rng.py, as two's-complement Longs (JVM multiplication wraps like uint64).
private val GOLDEN = 0x9E3779B97F4A7C15uL.toLong()
private val M1 = 0xBF58476D1CE4E5B9uL.toLong()
private val M2 = 0x94D049BB133111EBuL.toLong()
private val SEED_MUL = 0x100000001B3uL.toLong()
private val STREAM_MUL = 0xD6E8FEB86659FD93uL.toLong()

internal fun splitmix64(x: Long): Long {
    var z = x + GOLDEN
    z = (z xor (z ushr 30)) * M1
    z = (z xor (z ushr 27)) * M2
    return z xor (z ushr 31)
}

/** Bit-for-bit port of `runtime/rng.py`: 64-bit wrapping arithmetic, Box-Muller in double, rounded to float. */
class PortableRng(seed: Long, stream: Long) {
    private val key: Long
    var counter: Long = 0
        private set

    init {
        require(seed >= 0) { "seed must be >= 0, got $seed" }
        key = splitmix64(seed * SEED_MUL + stream * STREAM_MUL)
    }

    fun nextU64(): Long = splitmix64(counter++ * GOLDEN + key)

    /** A double in [0, 1) with 53 random bits. */
    fun uniform(): Double = (nextU64() ushr 11).toDouble() * (1.0 / (1L shl 53))

    /** n float32 standard normals; both outputs of each Box-Muller pair are used. */
    fun normal(n: Int): FloatArray {
        val out = FloatArray(n)
        var i = 0
        while (i < n) {
            val u0 = uniform()
            val u1 = uniform()
            val radius = sqrt(-2.0 * ln1p(-u0))
            val theta = 2.0 * PI * u1
            out[i] = (radius * cos(theta)).toFloat()
            if (i + 1 < n) out[i + 1] = (radius * sin(theta)).toFloat()
            i += 2
        }
        return out
    }
}
