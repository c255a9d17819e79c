package ai.melodyedge.core

import kotlin.math.exp

/**
 * Port of `runtime/sampling.py`: temperature and top-k in double, stable descending order (ties keep
 * the lower index), inverse-CDF with one uniform per token. temperature == 0 is greedy; topK == 0 keeps all.
 */
fun sampleToken(logits: FloatArray, temperature: Double, topK: Int, u: Double): Int {
    for (x in logits) {
        if (x.isNaN() || x.isInfinite()) throw ArithmeticException("LM logits contain NaN/Inf; the bundle is broken")
    }
    if (temperature == 0.0) {
        var best = 0
        for (i in logits.indices) if (logits[i] > logits[best]) best = i
        return best
    }
    val order = logits.indices.sortedWith(compareBy<Int> { -logits[it].toDouble() }.thenBy { it })
    val kept = if (topK in 1 until logits.size) order.subList(0, topK) else order
    val z = DoubleArray(kept.size) { logits[kept[it]].toDouble() / temperature }
    val max = z.max()
    val cdf = DoubleArray(z.size)
    var acc = 0.0
    for (i in z.indices) {
        acc += exp(z[i] - max)
        cdf[i] = acc
    }
    val target = u * cdf[cdf.size - 1]
    // searchsorted(side="right"): the first index whose cdf exceeds target.
    var lo = 0
    var hi = cdf.size
    while (lo < hi) {
        val mid = (lo + hi) ushr 1
        if (cdf[mid] <= target) lo = mid + 1 else hi = mid
    }
    return kept[minOf(lo, kept.size - 1)]
}
