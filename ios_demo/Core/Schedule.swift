import Foundation

/// Static sizes of a bundle (the Python StreamSpec, runtime/backend.py).
public struct StreamSpec: Equatable {
    public let sampleRate: Int
    public let hopLength: Int
    public let latentChannels: Int
    public let chunkFrames: Int
    public let chunks: Int
    public let framesPerToken: Int
    public let prefixLevels: Int
    public let prefixCodebookSize: Int
    public let vocabSize: Int
    public let vaeContextFrames: Int
    public let lmMaxSeqLen: Int

    public var windowFrames: Int { chunkFrames * chunks }
    public var windowTokens: Int { windowFrames / framesPerToken }
    public var nullToken: Int64 { Int64(vocabSize) }

    /// Global token indices [start, end) of global chunk `chunk`.
    public func chunkTokenRange(_ chunk: Int) -> (Int, Int) {
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

public struct GenerationSettings {
    public let seconds: Double
    public let steps: Int
    public var guidanceScale: Double = 2.5
    public var temperature: Double = 1.0
    public var topK: Int = 0
    public var seed: UInt64 = 0
    /// Sampler steps of the first chunk only (0: `steps`): fewer bring the first audio sooner.
    public var firstSteps: Int = 0

    // Spelled out: a memberwise initialiser is internal, and the app (another module) builds settings.
    public init(seconds: Double, steps: Int, guidanceScale: Double = 2.5, temperature: Double = 1.0,
                topK: Int = 0, seed: UInt64 = 0, firstSteps: Int = 0) {
        self.seconds = seconds
        self.steps = steps
        self.guidanceScale = guidanceScale
        self.temperature = temperature
        self.topK = topK
        self.seed = seed
        self.firstSteps = firstSteps
    }

    /// Sampler steps of global chunk `g`.
    public func stepsFor(_ g: Int) -> Int { g == 0 && firstSteps > 0 ? firstSteps : steps }
}
