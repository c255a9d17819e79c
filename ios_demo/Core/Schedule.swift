import Foundation

/// Static sizes of a bundle (the Python StreamSpec, runtime/backend.py).
struct StreamSpec: Equatable {
    let sampleRate: Int
    let hopLength: Int
    let latentChannels: Int
    let chunkFrames: Int
    let chunks: Int
    let framesPerToken: Int
    let prefixLevels: Int
    let prefixCodebookSize: Int
    let vocabSize: Int
    let vaeContextFrames: Int
    let lmMaxSeqLen: Int

    var windowFrames: Int { chunkFrames * chunks }
    var windowTokens: Int { windowFrames / framesPerToken }
    var nullToken: Int64 { Int64(vocabSize) }

    /// Global token indices [start, end) of global chunk `chunk`.
    func chunkTokenRange(_ chunk: Int) -> (Int, Int) {
        ((chunk * chunkFrames) / framesPerToken, ((chunk + 1) * chunkFrames) / framesPerToken)
    }
}

/// The paper's angle steps, largest first: w_t = pi/(6T) + 2 pi t / (3T(T+1)), t = T..1 (models/diffusion.py).
func angleSchedule(_ steps: Int) -> [Double] {
    precondition(steps >= 1, "steps must be >= 1")
    return (0..<steps).map { i in
        let t = Double(steps - i)
        return Double.pi / Double(6 * steps) + 2 * Double.pi * t / (3.0 * Double(steps) * Double(steps + 1))
    }
}

struct GenerationSettings {
    let seconds: Double
    let steps: Int
    var guidanceScale: Double = 2.5
    var temperature: Double = 1.0
    var topK: Int = 0
    var seed: UInt64 = 0
}
