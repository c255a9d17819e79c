import Foundation

// Port of android_demo's LatencyReport.kt: what `melody-edge bench --json` reports, so figures from a
// phone compare with host figures (runtime/bench.schema.json; tests/apps/test_ios_shell.py checks the keys).

/// `melody-edge bench`'s count of MusicLM's network passes per second of audio (runtime/bench.py).
public let MUSICLM_NFE_PER_SECOND = 25 + 200 + 400

/// Wraps the shell's runner to count network calls, as runtime/bench.py's recorder does.
public final class CountingRunner: ModelRunner {
    private let inner: ModelRunner
    public private(set) var counts = ["dpd": 0, "lm_decode": 0, "lm_prefill": 0, "vae_decode": 0, "dpd_sampler": 0]

    public init(_ inner: ModelRunner) { self.inner = inner }

    public func lmReset() throws { try inner.lmReset() }

    public func lmPrefill(_ ids: [Int64], startPos: Int) throws -> [Float] {
        let out = try inner.lmPrefill(ids, startPos: startPos)
        counts["lm_prefill", default: 0] += 1  // counted once it succeeded, as Kotlin's .also does
        return out
    }

    public func lmDecode(_ token: Int64, pos: Int) throws -> [Float] {
        let out = try inner.lmDecode(token, pos: pos)
        counts["lm_decode", default: 0] += 1
        return out
    }

    public func dpd(z: [Float], angles: [Float], tokens: [Int64]) throws -> [Float] {
        let out = try inner.dpd(z: z, angles: angles, tokens: tokens)
        counts["dpd", default: 0] += 1
        return out
    }

    public func vaeDecode(_ z: [Float]) throws -> [Float] {
        let out = try inner.vaeDecode(z)
        counts["vae_decode", default: 0] += 1
        return out
    }

    public var hasUnrolledSampler: Bool { inner.hasUnrolledSampler }

    /// One call, but `steps` guided network passes inside (counted as dpd passes, as runtime/bench.py does).
    public func dpdSampler(z: [Float], angles: [Float], target: [Float], tokens: [Int64], guidance: Float, steps: Int) throws -> [Float] {
        let out = try inner.dpdSampler(z: z, angles: angles, target: target, tokens: tokens, guidance: guidance, steps: steps)
        counts["dpd_sampler", default: 0] += 1
        counts["dpd", default: 0] += steps
        return out
    }
}

/// The calls that are network forward passes (a dpd_sampler call adds its T passes to "dpd").
public let NFE_CALLS = ["dpd", "lm_decode", "lm_prefill", "vae_decode"]

/// numpy.percentile with linear interpolation.
public func percentile(_ values: [Double], _ q: Double) -> Double {
    let s = values.sorted()
    let pos = Double(s.count - 1) * q / 100.0
    let lo = Int(pos.rounded(.down)), hi = Int(pos.rounded(.up))
    return s[lo] + (s[hi] - s[lo]) * (pos - Double(lo))
}

/// One emitted chunk, as the report's `chunks` entries describe it.
public struct ChunkRecord {
    public let index: Int
    public let latency: Double
    public let lm: Double
    public let dpd: Double
    public let vae: Double
    public let tokens: Int
    public let audioSeconds: Double
    public let finite: Bool
    public let rssMb: Double
}

/// Per-chunk records a report keeps: the most recent 240 (10 min of 2.5 s chunks), so a run "until Stop"
/// holds bounded memory. Totals (seconds, wall, RTF, tokens/s, DPD step, NFE, finite, peak) cover the whole
/// run; the chunk latency p50/p95 and the VAE median cover the kept records (all of them up to 10 min).
public let MAX_REPORT_CHUNKS = 240

/// Collects the report; feed it every emitted chunk. `rssMb` is the shell's memory probe.
public final class LatencyReport {
    private let name: String, backend: String, model: String
    private let steps: Int
    private let spec: StreamSpec
    private let rssMb: () -> Double
    private let clock: () -> Double
    private let start: Double
    private var last: Double
    private let maxChunks: Int
    /// The last `maxChunks` records.
    public private(set) var records: [ChunkRecord] = []
    // Running totals over every full chunk (the final flush has no tokens), dropped records included.
    private var lmTotal = 0.0
    private var dpdTotal = 0.0
    private var tokensTotal = 0
    private var allFinite = true
    public private(set) var firstAudio: Double?
    public private(set) var audioSeconds = 0.0
    public private(set) var peakRss = 0.0

    public init(name: String, backend: String, model: String, steps: Int, spec: StreamSpec,
                rssMb: @escaping () -> Double,
                clock: @escaping () -> Double = { ProcessInfo.processInfo.systemUptime },
                maxChunks: Int = MAX_REPORT_CHUNKS) {
        self.name = name
        self.backend = backend
        self.model = model
        self.steps = steps
        self.spec = spec
        self.rssMb = rssMb
        self.clock = clock
        self.maxChunks = maxChunks
        let now = clock()
        start = now
        last = now
    }

    /// Seconds of audio per chunk: a chunk must be ready within this to play without gaps.
    public var chunkAudioSeconds: Double { Double(spec.chunkFrames * spec.hopLength) / Double(spec.sampleRate) }

    /// Wall time so far over audio so far (below 1 is faster than real time).
    public var realTimeFactor: Double? { audioSeconds > 0 ? (clock() - start) / audioSeconds : nil }

    @discardableResult
    public func onChunk(_ chunk: AudioChunk) -> ChunkRecord {
        let now = clock()
        if firstAudio == nil { firstAudio = now - start }
        let rss = rssMb()
        peakRss = max(peakRss, rss)
        let seconds = Double(chunk.audio.count) / Double(spec.sampleRate)
        audioSeconds += seconds
        let record = ChunkRecord(index: chunk.index, latency: now - last, lm: chunk.lmSeconds, dpd: chunk.dpdSeconds,
                                 vae: chunk.vaeSeconds, tokens: chunk.tokens.count, audioSeconds: seconds,
                                 finite: chunk.audio.allSatisfy { $0.isFinite }, rssMb: rss)
        allFinite = allFinite && record.finite
        if record.tokens > 0 {
            lmTotal += record.lm
            dpdTotal += record.dpd
            tokensTotal += record.tokens
        }
        records.append(record)
        if records.count > maxChunks { records.removeFirst(records.count - maxChunks) }
        last = now
        return record
    }

    /// The whole report (`melody-edge bench --json`'s top level) as JSON text.
    public func toJSON(counts: [String: Int], machine: JSONValue, created: String, bundleBytes: Int?) -> String {
        JSONValue.object([
            ("schema_version", .int(1)), ("created", .string(created)), ("machine", machine),
            ("seconds", .double(audioSeconds)), ("runs", .array([runJSON(counts: counts, bundleBytes: bundleBytes)])),
        ]).text
    }

    /// The bench schema's `machine`: the keys it requires, plus the device model.
    public static func machineJSON(platform: String, cpuCount: Int, processor: String) -> JSONValue {
        .object([("platform", .string(platform)), ("processor", .string(processor)), ("cpu_count", .int(cpuCount))])
    }

    private func runJSON(counts: [String: Int], bundleBytes: Int?) -> JSONValue {
        let wall = clock() - start
        let full = records.filter { $0.tokens > 0 }  // kept records only (the final flush carries no tokens)
        let lat = full.map(\.latency)
        let nfe = NFE_CALLS.reduce(0) { $0 + (counts[$1] ?? 0) }
        // Figures first, then one flat literal: keeps the type checker's work small.
        let rtf: Double? = audioSeconds > 0 ? wall / audioSeconds : nil
        let p50: Double? = lat.isEmpty ? nil : percentile(lat, 50)
        let p95: Double? = lat.isEmpty ? nil : percentile(lat, 95)
        let tokensPerS: Double? = lmTotal > 0 ? Double(tokensTotal) / lmTotal : nil
        let dpdStep = dpdTotal / Double(max(counts["dpd"] ?? 0, 1))
        let vaeChunk: Double? = full.isEmpty ? nil : percentile(full.map(\.vae), 50)
        let nfe10 = Double(nfe) * 10.0 / max(audioSeconds, 1e-9)
        let bytes: JSONValue = bundleBytes.map { JSONValue.int($0) } ?? .null
        let chunks: [JSONValue] = records.map { chunkJSON($0) }
        return .object([
            ("name", .string(name)), ("kind", .string("bundle")), ("backend", .string(backend)), ("model", .string(model)),
            ("seconds", .double(audioSeconds)), ("steps", .int(steps)),
            ("time_to_first_audio_s", .optional(firstAudio)), ("wall_s", .double(wall)),
            ("real_time_factor", .optional(rtf)), ("chunk_latency_p50_s", .optional(p50)),
            ("chunk_latency_p95_s", .optional(p95)), ("chunk_audio_s", .double(chunkAudioSeconds)),
            ("lm_tokens_per_s", .optional(tokensPerS)), ("dpd_step_s", .double(dpdStep)),
            ("vae_chunk_s", .optional(vaeChunk)), ("peak_rss_mb", .double(peakRss)), ("bundle_bytes", bytes),
            ("nfe_per_10s", .double(nfe10)), ("musiclm_nfe_per_10s", .int(MUSICLM_NFE_PER_SECOND * 10)),
            ("audio_finite", .bool(allFinite)), ("speedup_vs_eager", .null),
            ("sampler_artifact_calls", .int(counts["dpd_sampler"] ?? 0)), ("chunks", .array(chunks)),
        ])
    }

    private func chunkJSON(_ c: ChunkRecord) -> JSONValue {
        .object([
            ("index", .int(c.index)), ("latency_s", .double(c.latency)), ("lm_s", .double(c.lm)),
            ("dpd_s", .double(c.dpd)), ("vae_s", .double(c.vae)), ("tokens", .int(c.tokens)),
            ("audio_s", .double(c.audioSeconds)), ("finite", .bool(c.finite)), ("rss_mb", .double(c.rssMb)),
        ])
    }
}

/// A JSON value whose objects keep their key order (the bench report's order); JSONSerialization would not.
public indirect enum JSONValue {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    static func optional(_ v: Double?) -> JSONValue { v.map { JSONValue.double($0) } ?? .null }

    public var text: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? "\(d)" : "null"  // JSON has no NaN or infinity
        case .string(let s): return JSONValue.quote(s)
        case .array(let a): return "[" + a.map(\.text).joined(separator: ",") + "]"
        case .object(let o): return "{" + o.map { JSONValue.quote($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    private static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
