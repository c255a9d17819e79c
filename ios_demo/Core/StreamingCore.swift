import Foundation

/// What the platform shell runs (Core ML or ExecuTorch). Arrays are row-major, batch first.
public protocol ModelRunner {
    func lmReset() throws
    /// ids of one prefill starting at `startPos` -> logits [vocab] of the last position.
    func lmPrefill(_ ids: [Int64], startPos: Int) throws -> [Float]
    func lmDecode(_ token: Int64, pos: Int) throws -> [Float]
    /// z [2, C, W], angles [2, W], tokens [2, S] (conditional, then null) -> velocity [2, C, W].
    func dpd(z: [Float], angles: [Float], tokens: [Int64]) throws -> [Float]
    /// z [1, C, R + chunk + R] -> audio of the chunk's frames [chunk * hop].
    func vaeDecode(_ z: [Float]) throws -> [Float]
    /// The bundle's unrolled `steps`-step sampler in one call: z [1, C, W], angles [1, W], target [1, W]
    /// (1 on the frames to denoise), tokens [1, S], guidance [1] -> z [1, C, W]. Called only when
    /// StreamingCore's `unrolledSamplerSteps` says the bundle has it and prefers it.
    func dpdSampler(z: [Float], angles: [Float], target: [Float], tokens: [Int64], guidance: Float, steps: Int) throws -> [Float]
    /// Whether `dpdSampler` works (the bundle's unrolled sampler was loaded).
    var hasUnrolledSampler: Bool { get }
}

public struct UnrolledSamplerUnavailable: Error {}

extension ModelRunner {
    public var hasUnrolledSampler: Bool { false }

    public func dpdSampler(z: [Float], angles: [Float], target: [Float], tokens: [Int64], guidance: Float, steps: Int) throws -> [Float] {
        throw UnrolledSamplerUnavailable()
    }
}

public struct AudioChunk {
    public let index: Int
    public let audio: [Float]
    public let startSample: Int
    public let tokens: [Int]
    public let lmSeconds: Double
    public let dpdSeconds: Double
    public let vaeSeconds: Double
}

private let halfPi = Float(Double.pi / 2)

/// The streaming schedule of runtime/pipeline.py (and StreamingCore.kt), line for line. `emit`
/// returns false to stop (the Stop button). `unrolledSamplerSteps`: T of the bundle's unrolled sampler
/// when the manifest prefers it (`Manifest.unrolledSamplerSteps`), else 0; a generation with that many
/// steps makes one `dpdSampler` call per chunk instead of T `dpd` calls (BundleBackend.sample_window).
public final class StreamingCore {
    public let runner: ModelRunner
    public let spec: StreamSpec
    public let unrolledSamplerSteps: Int

    public init(runner: ModelRunner, spec: StreamSpec, unrolledSamplerSteps: Int = 0) {
        self.runner = runner
        self.spec = spec
        self.unrolledSamplerSteps = unrolledSamplerSteps
    }

    public func numChunks(seconds: Double) -> Int {
        let latentRate = Double(spec.sampleRate) / Double(spec.hopLength)
        return max(1, Int((seconds * latentRate / Double(spec.chunkFrames) - 1e-9).rounded(.up)))
    }

    public func stream(prefixCodes: [Int], settings: GenerationSettings, emit: (AudioChunk) -> Bool) throws {
        let s = spec
        precondition(prefixCodes.count == s.prefixLevels, "expected \(s.prefixLevels) conditioning tokens")
        let ch = s.latentChannels, c = s.chunkFrames, r = s.vaeContextFrames
        let w = s.windowFrames, nTok = s.windowTokens, p = s.prefixLevels
        let totalSamples = Int((settings.seconds * Double(s.sampleRate)).rounded())
        let nChunks = numChunks(seconds: settings.seconds)
        let schedules = [angleSchedule(settings.stepsFor(0)), angleSchedule(settings.steps)]
        var tokRng = PortableRng(seed: settings.seed, stream: RngStreams.tokens)
        var noiseRng = PortableRng(seed: settings.seed, stream: RngStreams.noise)

        var zWin = noiseRng.normal(ch * w)  // [C, W] channel-major
        var angles = [Float](repeating: halfPi, count: w)
        var tokens = [Int64](repeating: s.nullToken, count: nTok)
        var history = [Float](repeating: 0, count: ch * 2 * r)
        var firstChunk = 0

        try runner.lmReset()
        let prefixIds = (0..<p).map { Int64(s.vocabSize) + Int64($0) * Int64(s.prefixCodebookSize) + Int64(prefixCodes[$0]) }
        var nextLogits = try runner.lmPrefill(prefixIds, startPos: 0)
        let prefixLogits = nextLogits
        var pending: Int64? = nil
        var emitted = 0
        var j = 0

        for g in 0..<nChunks {
            let t0 = Date()
            if g >= s.chunks {
                let (dropLo, dropHi) = s.chunkTokenRange(firstChunk)
                let nDrop = dropHi - dropLo
                if r > 0 { history = lastFrames(history, histLen: 2 * r, zWin, zLen: w, n: c, len: 2 * r) }
                let fresh = noiseRng.normal(ch * c)
                var shifted = [Float](repeating: 0, count: ch * w)
                for k in 0..<ch {
                    shifted[(k * w)..<(k * w + w - c)] = zWin[(k * w + c)..<(k * w + w)]
                    shifted[(k * w + w - c)..<(k * w + w)] = fresh[(k * c)..<(k * c + c)]
                }
                zWin = shifted
                angles = Array(angles[c...]) + [Float](repeating: halfPi, count: c)
                tokens = Array(tokens[nDrop...]) + [Int64](repeating: s.nullToken, count: nDrop)
                firstChunk += 1
                let kept = nTok - nDrop
                nextLogits = kept > 0 ? try runner.lmPrefill(Array(tokens[0..<kept]), startPos: p) : prefixLogits
                pending = nil
            }
            j = g - firstChunk
            let (lo, hi) = s.chunkTokenRange(g)
            let base = s.chunkTokenRange(firstChunk).0
            var newTokens: [Int] = []
            for i in (lo - base)..<(hi - base) {
                if let prev = pending { nextLogits = try runner.lmDecode(prev, pos: p + i - 1) }
                let tok = try sampleToken(nextLogits, temperature: settings.temperature, topK: settings.topK, u: tokRng.uniform())
                tokens[i] = Int64(tok)
                newTokens.append(tok)
                pending = Int64(tok)
            }
            let t1 = Date()

            for f in (j * c)..<((j + 1) * c) { angles[f] = halfPi }
            let steps = settings.stepsFor(g)
            if steps == unrolledSamplerSteps {
                var target = [Float](repeating: 0, count: w)
                for f in (j * c)..<((j + 1) * c) { target[f] = 1 }
                zWin = try runner.dpdSampler(z: zWin, angles: angles, target: target, tokens: tokens,
                                             guidance: Float(settings.guidanceScale), steps: steps)
            } else {
                zWin = try ddimSample(zWin, &angles, lo: j * c, hi: (j + 1) * c, tokens: tokens,
                                      guidance: settings.guidanceScale, schedule: schedules[min(g, 1)])
            }
            for f in (j * c)..<((j + 1) * c) { angles[f] = 0 }
            let t2 = Date()

            let final = lastFrames(history, histLen: 2 * r, zWin, zLen: w, n: (j + 1) * c, len: c + 2 * r)
            let audio = try runner.vaeDecode(final)
            let skip = g == 0 ? r * s.hopLength : 0
            let room = max(0, totalSamples - emitted)
            let out = Array(audio[skip..<(skip + min(audio.count - skip, room))])
            let t3 = Date()
            let chunk = AudioChunk(index: g, audio: out, startSample: emitted, tokens: newTokens,
                                   lmSeconds: t1.timeIntervalSince(t0), dpdSeconds: t2.timeIntervalSince(t1),
                                   vaeSeconds: t3.timeIntervalSince(t2))
            emitted += out.count
            if !emit(chunk) { return }
        }
        if r > 0 && emitted < totalSamples {
            let t0 = Date()
            let tail = lastFrames(history, histLen: 2 * r, zWin, zLen: w, n: (j + 1) * c, len: 2 * r)
            var window = [Float](repeating: 0, count: ch * (2 * r + c))
            for k in 0..<ch {
                window[(k * (2 * r + c))..<(k * (2 * r + c) + 2 * r)] = tail[(k * 2 * r)..<((k + 1) * 2 * r)]
            }
            let audio = try runner.vaeDecode(window)
            let n = min(r * s.hopLength, totalSamples - emitted)
            _ = emit(AudioChunk(index: nChunks, audio: Array(audio[0..<n]), startSample: emitted, tokens: [],
                                lmSeconds: 0, dpdSeconds: 0, vaeSeconds: Date().timeIntervalSince(t0)))
        }
    }

    /// Per channel: the last `len` frames of history [C, histLen] followed by z[:, :n] of a [C, zLen] array.
    private func lastFrames(_ history: [Float], histLen: Int, _ z: [Float], zLen: Int, n: Int, len: Int) -> [Float] {
        var out = [Float](repeating: 0, count: spec.latentChannels * len)
        for k in 0..<spec.latentChannels {
            for t in 0..<len {
                let src = histLen + n - len + t
                out[k * len + t] = src < histLen ? history[k * histLen + src] : z[k * zLen + src - histLen]
            }
        }
        return out
    }

    /// models/diffusion.py ddim_sample on frames [lo, hi), both guidance passes batched as one call.
    private func ddimSample(_ z0: [Float], _ angles: inout [Float], lo: Int, hi: Int, tokens: [Int64],
                            guidance: Double, schedule: [Double]) throws -> [Float] {
        let ch = spec.latentChannels, w = spec.windowFrames
        let scale = Float(guidance)
        var z = z0
        let batchTokens = tokens + [Int64](repeating: spec.nullToken, count: tokens.count)
        for step in schedule {
            let v = try runner.dpd(z: z + z, angles: angles + angles, tokens: batchTokens)
            let wf = Float(step)
            var next = z
            let cs = cos(wf), sn = sin(wf)
            for f in lo..<hi {
                for k in 0..<ch {
                    let i = k * w + f
                    let vu = v[ch * w + i]
                    let vg = vu + scale * (v[i] - vu)
                    next[i] = cs * z[i] - sn * vg
                }
                angles[f] = max(angles[f] - wf, 0)
            }
            z = next
        }
        return z
    }
}
