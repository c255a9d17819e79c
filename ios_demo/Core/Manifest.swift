import Foundation

// Port of android_demo's Manifest.kt: the parts of manifest.json the app needs, validated against
// BundleContract with the same messages (tests/apps/test_ios_shell.py compares them with the Kotlin ones).
// JSONSerialization instead of a hand-written reader: Foundation has one on every Apple platform.

public struct BundleException: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct Preset: Hashable {
    public let name: String
    public let prompt: String
    public let tokens: [Int]
}

/// One tensor of a method, as the exporter wrote it (Core ML packages take int32 where ExecuTorch takes int64).
public struct TensorSpec: Equatable {
    public let name: String
    public let shape: [Int]
    public let dtype: String

    public var count: Int { shape.reduce(1, *) }
}

public struct Manifest {
    public let target: String
    public let recipe: String
    public let model: String
    public let spec: StreamSpec
    public let prefillLen: Int
    public let steps: Int
    public let guidanceScale: Double
    public let temperature: Double
    public let topK: Int
    public let presets: [Preset]
    public let components: [String: [String: Any]]
    /// Bytes of every file the manifest lists (the report's bundle_bytes, as `melody-edge bench` sums them).
    public let bundleBytes: Int?
    /// File name -> sha256 (the shell keys its compiled-model cache on it).
    public let digests: [String: String]
    /// Every file or folder the manifest's `files` lists, sorted.
    public let files: [String]
    /// sampler.preferred: the sampler form the export measured as faster ("unrolled" / "stepwise").
    public var samplerPreferred: String? = nil
    /// sampler.lm_guidance_scale: classifier-free guidance inside the LM program (1 = none; older bundles lack it).
    public var lmGuidanceScale: Double = 1.0

    /// T of the unrolled sampler artifact when the app should use it (the bundle has one and the export did
    /// not measure T single calls as faster), else 0: runtime/backend.py BundleBackend.sample_window.
    public var unrolledSamplerSteps: Int {
        components["dpd_sampler"] != nil && samplerPreferred != "stepwise" ? steps : 0
    }

    public static func load(bundleDir: URL) throws -> Manifest {
        let file = bundleDir.appendingPathComponent(BundleContract.MANIFEST_FILE)
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw BundleException("\(file.path) not found: push a bundle exported by `melody-edge export` (see README)")
        }
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: Data(contentsOf: file))
        } catch {
            throw BundleException("\(file.path) is not valid JSON (\(error.localizedDescription)); re-export or re-push the bundle")
        }
        return try parse(root, source: file.path)
    }

    public static func parse(_ root: Any, source: String = BundleContract.MANIFEST_FILE) throws -> Manifest {
        guard let m = root as? [String: Any] else { throw BundleException("\(source): not a JSON object") }
        guard let version = (m["schema_version"] as? NSNumber)?.intValue else {
            throw BundleException("\(source): no schema_version")
        }
        if version > BundleContract.SCHEMA_VERSION {
            throw BundleException(
                "\(source): schema \(version) is newer than this app understands (\(BundleContract.SCHEMA_VERSION)); update the app")
        }
        if version < BundleContract.SCHEMA_VERSION {
            throw BundleException("\(source): schema \(version) is older than this app's; re-export the bundle")
        }
        if m["format"] as? String != BundleContract.FORMAT {
            throw BundleException("\(source): format \(describe(m["format"])) is not \(BundleContract.FORMAT)")
        }
        guard let stream = m["stream"] as? [String: Any] else { throw BundleException("\(source): no 'stream' section") }
        for k in BundleContract.STREAM_KEYS where stream[k] == nil {
            throw BundleException("\(source): stream.\(k) is missing")
        }
        guard let sampler = m["sampler"] as? [String: Any] else { throw BundleException("\(source): no 'sampler' section") }
        for k in BundleContract.SAMPLER_KEYS where sampler[k] == nil {
            throw BundleException("\(source): sampler.\(k) is missing")
        }
        guard let comps = m["components"] as? [String: [String: Any]] else {
            throw BundleException("\(source): no 'components'")
        }
        for c in BundleContract.REQUIRED_COMPONENTS where comps[c] == nil {
            throw BundleException("\(source): component '\(c)' is missing")
        }
        func int(_ d: [String: Any], _ section: String, _ k: String) throws -> Int {
            guard let v = d[k] as? NSNumber else { throw BundleException("\(source): \(section).\(k) is not a number") }
            return v.intValue
        }
        func dbl(_ d: [String: Any], _ section: String, _ k: String) throws -> Double {
            guard let v = d[k] as? NSNumber else { throw BundleException("\(source): \(section).\(k) is not a number") }
            return v.doubleValue
        }
        let s = { (k: String) in try int(stream, "stream", k) }
        let spec = StreamSpec(
            sampleRate: try s("sample_rate"), hopLength: try s("hop_length"), latentChannels: try s("latent_channels"),
            chunkFrames: try s("chunk_frames"), chunks: try s("chunks"), framesPerToken: try s("frames_per_token"),
            prefixLevels: try s("prefix_levels"), prefixCodebookSize: try s("prefix_codebook_size"),
            vocabSize: try s("vocab_size"), vaeContextFrames: try s("vae_context_frames"), lmMaxSeqLen: try s("lm_max_seq_len"))
        var presets: [Preset] = []
        for (i, p) in ((m["presets"] as? [[String: Any]]) ?? []).enumerated() {
            guard let name = p["name"] as? String, let prompt = p["prompt"] as? String,
                  let raw = p["tokens"] as? [NSNumber] else {
                throw BundleException("\(source): preset \(i) is not {name, prompt, tokens}; re-export the bundle")
            }
            let tokens = raw.map(\.intValue)
            // StreamingCore traps on a wrong prefix; refuse it here with a message instead.
            if tokens.count != spec.prefixLevels || tokens.contains(where: { $0 < 0 || $0 >= spec.prefixCodebookSize }) {
                throw BundleException("\(source): preset '\(name)' needs \(spec.prefixLevels) tokens in [0, \(spec.prefixCodebookSize))")
            }
            presets.append(Preset(name: name, prompt: prompt, tokens: tokens))
        }
        var bytes: Int? = nil
        var digests: [String: String] = [:]
        var listed: [String] = []
        if let files = m["files"] as? [String: [String: Any]] {
            listed = files.keys.sorted()
            bytes = files.values.reduce(0) { total, meta in total + ((meta["bytes"] as? NSNumber)?.intValue ?? 0) }
            digests = files.compactMapValues { $0["sha256"] as? String }
        }
        return Manifest(
            target: m["target"] as? String ?? "?",
            recipe: (m["recipe"] as? [String: Any])?["name"] as? String ?? "?",
            model: (m["model"] as? [String: Any])?["name"] as? String ?? "?",
            spec: spec, prefillLen: try s("lm_prefill_len"),
            steps: try int(sampler, "sampler", "steps"), guidanceScale: try dbl(sampler, "sampler", "guidance_scale"),
            temperature: try dbl(sampler, "sampler", "temperature"), topK: try int(sampler, "sampler", "top_k"),
            presets: presets, components: comps, bundleBytes: bytes, digests: digests, files: listed,
            samplerPreferred: sampler["preferred"] as? String,
            lmGuidanceScale: (sampler["lm_guidance_scale"] as? NSNumber)?.doubleValue ?? 1.0)
    }

    /// Every file the manifest lists, and each component's file, must exist in `bundleDir` (as Android's
    /// Bundles.kt checks): a bundle copied in part fails here, naming the file, not inside Core ML or ExecuTorch.
    public func checkFilesExist(bundleDir: URL) throws {
        let fm = FileManager.default
        for name in files where !fm.fileExists(atPath: bundleDir.appendingPathComponent(name).path) {
            throw BundleException("\(bundleDir.appendingPathComponent(name).path) is listed in the manifest but missing: "
                + "copy the whole bundle directory")
        }
        for component in BundleContract.REQUIRED_COMPONENTS {
            for method in ((try entry(component)["methods"] as? [String: Any]) ?? [:]).keys.sorted() {
                let path = bundleDir.appendingPathComponent(try file(component, method)).path
                if !fm.fileExists(atPath: path) {
                    throw BundleException("\(path) (component '\(component)') is missing: copy the whole bundle directory")
                }
            }
        }
    }

    /// The file that holds `method` of `component`: `files[method]` when the exporter split it, else `file`.
    public func file(_ component: String, _ method: String) throws -> String {
        let entry = try self.entry(component)
        if let f = (entry["files"] as? [String: String])?[method] ?? entry["file"] as? String { return f }
        throw BundleException("\(BundleContract.MANIFEST_FILE): component '\(component)' names no file")
    }

    /// Input and output tensors of `component.method` (names, static shapes, dtypes).
    public func tensors(_ component: String, _ method: String) throws -> (inputs: [TensorSpec], outputs: [TensorSpec]) {
        guard let m = (try entry(component)["methods"] as? [String: Any])?[method] as? [String: Any] else {
            throw BundleException("\(BundleContract.MANIFEST_FILE): \(component) has no method '\(method)'; re-export the bundle")
        }
        func list(_ key: String) throws -> [TensorSpec] {
            guard let raw = m[key] as? [[String: Any]] else {
                throw BundleException("\(BundleContract.MANIFEST_FILE): \(component).\(method) has no \(key)")
            }
            return try raw.map { t in
                guard let name = t["name"] as? String, let shape = t["shape"] as? [NSNumber], let dtype = t["dtype"] as? String else {
                    throw BundleException("\(BundleContract.MANIFEST_FILE): a tensor of \(component).\(method) is malformed")
                }
                return TensorSpec(name: name, shape: shape.map(\.intValue), dtype: dtype)
            }
        }
        return (try list("inputs"), try list("outputs"))
    }

    private func entry(_ component: String) throws -> [String: Any] {
        guard let e = components[component] else {
            throw BundleException("\(BundleContract.MANIFEST_FILE): component '\(component)' is missing")
        }
        return e
    }
}

/// Kotlin's string template prints a missing value as "null"; Swift would print "Optional(...)".
private func describe(_ value: Any?) -> String {
    guard let value = value else { return "null" }
    return "\(value)"
}
