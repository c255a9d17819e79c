import Foundation

enum SamplingError: Error {
    case nonFiniteLogits
}

/// Port of runtime/sampling.py: temperature and top-k in Double, stable descending order (ties keep
/// the lower index), inverse-CDF with one uniform per token. temperature == 0 is greedy; topK == 0 keeps all.
func sampleToken(_ logits: [Float], temperature: Double, topK: Int, u: Double) throws -> Int {
    if logits.contains(where: { !$0.isFinite }) { throw SamplingError.nonFiniteLogits }
    if temperature == 0 {
        var best = 0
        for i in logits.indices where logits[i] > logits[best] { best = i }
        return best
    }
    let order = logits.indices.sorted { a, b in
        logits[a] != logits[b] ? logits[a] > logits[b] : a < b
    }
    let kept = (topK > 0 && topK < logits.count) ? Array(order[0..<topK]) : order
    let z = kept.map { Double(logits[$0]) / temperature }
    let maxZ = z.max() ?? 0
    var cdf = [Double](repeating: 0, count: z.count)
    var acc = 0.0
    for i in z.indices {
        acc += exp(z[i] - maxZ)
        cdf[i] = acc
    }
    let target = u * cdf[cdf.count - 1]
    var lo = 0
    var hi = cdf.count
    while lo < hi {  // searchsorted(side: "right")
        let mid = (lo + hi) / 2
        if cdf[mid] <= target { lo = mid + 1 } else { hi = mid }
    }
    return kept[min(lo, kept.count - 1)]
}
