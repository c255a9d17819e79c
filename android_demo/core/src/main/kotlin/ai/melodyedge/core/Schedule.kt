package ai.melodyedge.core

import kotlin.math.PI

/** Static sizes of a bundle (the Python `StreamSpec`, runtime/backend.py). */
data class StreamSpec(
    val sampleRate: Int,
    val hopLength: Int,
    val latentChannels: Int,
    val chunkFrames: Int,
    val chunks: Int,
    val framesPerToken: Int,
    val prefixLevels: Int,
    val prefixCodebookSize: Int,
    val vocabSize: Int,
    val vaeContextFrames: Int,
    val lmMaxSeqLen: Int,
) {
    init {
        require(vaeContextFrames <= chunkFrames) {
            "VAE context ($vaeContextFrames frames) exceeds a chunk ($chunkFrames)"
        }
    }

    val windowFrames get() = chunkFrames * chunks
    val windowTokens get() = windowFrames / framesPerToken
    val nullToken get() = vocabSize.toLong()

    /** Global token indices [start, end) of global chunk [chunk]. */
    fun chunkTokenRange(chunk: Int): Pair<Int, Int> =
        (chunk * chunkFrames) / framesPerToken to ((chunk + 1) * chunkFrames) / framesPerToken
}

/** The paper's angle steps, largest first: w_t = pi/(6T) + 2 pi t / (3T(T+1)), t = T..1 (models/diffusion.py). */
fun angleSchedule(steps: Int): DoubleArray {
    require(steps >= 1) { "steps must be >= 1, got $steps" }
    return DoubleArray(steps) { i ->
        val t = (steps - i).toDouble()
        PI / (6 * steps) + 2 * PI * t / (3.0 * steps * (steps + 1))
    }
}

data class GenerationSettings(
    val seconds: Double,
    val steps: Int,
    val guidanceScale: Double = 2.5,
    val temperature: Double = 1.0,
    val topK: Int = 0,
    val seed: Long = 0,
    /** Sampler steps of the first chunk only (0: [steps]): fewer bring the first audio sooner. */
    val firstSteps: Int = 0,
) {
    init {
        require(seconds > 0 && seconds.isFinite()) { "seconds must be a positive number, got $seconds" }
        require(steps >= 1) { "steps must be >= 1, got $steps" }
        require(guidanceScale >= 0) { "guidance scale must be >= 0, got $guidanceScale" }
        require(temperature >= 0) { "temperature must be >= 0 (0 = greedy), got $temperature" }
        require(topK >= 0) { "top_k must be >= 0 (0 = off), got $topK" }
        require(seed >= 0) { "seed must be >= 0, got $seed" }
        require(firstSteps >= 0) { "first_steps must be >= 1, or 0 for the same as steps, got $firstSteps" }
    }

    /** Sampler steps of global chunk [g]. */
    fun stepsFor(g: Int): Int = if (g == 0 && firstSteps > 0) firstSteps else steps
}
