import Foundation

// Bit-for-bit port of runtime/rng.py (and android_demo's PortableRng.kt): SplitMix64 over
// (seed, stream, counter), wrapping UInt64 arithmetic, Box-Muller in Double rounded to Float.

enum RngStreams {
    static let tokens: UInt64 = 1
    static let noise: UInt64 = 2
}

@inline(__always) func splitmix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

struct PortableRng {
    private let key: UInt64
    private(set) var counter: UInt64 = 0

    init(seed: UInt64, stream: UInt64) {
        key = splitmix64(seed &* 0x100_0000_01B3 &+ stream &* 0xD6E8_FEB8_6659_FD93)
    }

    mutating func nextU64() -> UInt64 {
        let value = splitmix64(counter &* 0x9E37_79B9_7F4A_7C15 &+ key)
        counter &+= 1
        return value
    }

    /// A Double in [0, 1) with 53 random bits.
    mutating func uniform() -> Double {
        Double(nextU64() >> 11) * (1.0 / Double(UInt64(1) << 53))
    }

    /// n Float standard normals; both outputs of each Box-Muller pair are used.
    mutating func normal(_ n: Int) -> [Float] {
        var out = [Float](repeating: 0, count: n)
        var i = 0
        while i < n {
            let u0 = uniform()
            let u1 = uniform()
            let radius = (-2.0 * log1p(-u0)).squareRoot()
            let theta = 2.0 * Double.pi * u1
            out[i] = Float(radius * cos(theta))
            if i + 1 < n { out[i + 1] = Float(radius * sin(theta)) }
            i += 2
        }
        return out
    }
}
