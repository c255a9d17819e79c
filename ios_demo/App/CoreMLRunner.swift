import CoreML
import Foundation
import MelodyEdgeCore

/// What the `coreml` target's packages expose (export/coreml_export.py keeps runtime/contract.py's names;
/// tests/apps/test_ios_shell.py compares this table with both). The runner refuses a bundle whose
/// manifest says otherwise instead of failing inside Core ML with a less helpful error.
enum CoreMLNames {
    /// lm.mlpackage is one multifunction package; the other components have one function each.
    static let lmFunctions = ["prefill", "decode"]
    static let singleFunction = "forward"
    static let prefillInputs = ["ids", "start_pos"]
    static let prefillOutputs = ["logits"]
    static let decodeInputs = ["token", "pos"]
    static let decodeOutputs = ["logits"]
    static let dpdInputs = ["z", "angles", "tokens"]
    static let dpdOutputs = ["v"]
    static let vaeInputs = ["z"]
    static let vaeOutputs = ["audio"]
    static let samplerInputs = ["z", "angles", "target", "tokens", "guidance"]
    static let samplerOutputs = ["z_out"]
    /// Core ML has no int64 tensors: the exporter declares integer inputs int32, float inputs float32.
    static let inputDtypes = ["float32", "int32"]
}

/// Runs a `coreml` bundle: the KV cache is Core ML state (iOS 18), one MLState per stream made from the
/// decode function and passed to both LM functions, as runtime/coreml_backend.py does on macOS.
final class CoreMLRunner: ModelRunner {
    private let prefill: CoreMLFunction, decode: CoreMLFunction, dpdFn: CoreMLFunction, vae: CoreMLFunction
    /// The unrolled T-step sampler, loaded only where the manifest prefers it.
    private var sampler: CoreMLFunction?
    private let maxSeqLen: Int
    private var state: MLState?

    /// Compiles each .mlpackage once (cached by its sha256 under Application Support), then loads it; a
    /// compiled .mlmodelc in the bundle is loaded directly.
    static func load(bundle: URL, manifest: Manifest, units: MLComputeUnits,
                     progress: @escaping (String) -> Void) async throws -> CoreMLRunner {
        let lmFile = try manifest.file("lm", "prefill")
        guard try manifest.file("lm", "decode") == lmFile else {
            // Two packages would mean two state schemas: decode would not see what prefill wrote.
            throw BundleException("\(bundle.lastPathComponent): the LM is split over two packages; re-export with coremltools >= 8")
        }
        func fn(_ comp: String, _ method: String, multi: Bool, _ ins: [String], _ outs: [String]) async throws -> CoreMLFunction {
            let file = try manifest.file(comp, method)
            progress("Loading \(file) (\(method))…")
            let compiled = try await compiledModel(bundle.appendingPathComponent(file), digest: manifest.digests[file])
            let config = MLModelConfiguration()
            config.computeUnits = units
            if multi { config.functionName = method }  // iOS 18: selects one function of a multifunction package
            let (inputs, outputs) = try manifest.tensors(comp, method)
            try check(comp, method, inputs, outputs, ins, outs)
            return CoreMLFunction(model: try MLModel(contentsOf: compiled, configuration: config), inputs: inputs, outputs: outputs)
        }
        let runner = CoreMLRunner(
            prefill: try await fn("lm", "prefill", multi: true, CoreMLNames.prefillInputs, CoreMLNames.prefillOutputs),
            decode: try await fn("lm", "decode", multi: true, CoreMLNames.decodeInputs, CoreMLNames.decodeOutputs),
            dpd: try await fn("dpd", CoreMLNames.singleFunction, multi: false, CoreMLNames.dpdInputs, CoreMLNames.dpdOutputs),
            vae: try await fn("vae_decoder", CoreMLNames.singleFunction, multi: false, CoreMLNames.vaeInputs, CoreMLNames.vaeOutputs),
            maxSeqLen: manifest.spec.lmMaxSeqLen)
        if manifest.unrolledSamplerSteps > 0 {
            runner.sampler = try await fn("dpd_sampler", CoreMLNames.singleFunction, multi: false, CoreMLNames.samplerInputs, CoreMLNames.samplerOutputs)
        }
        try runner.lmReset()
        return runner
    }

    private init(prefill: CoreMLFunction, decode: CoreMLFunction, dpd: CoreMLFunction, vae: CoreMLFunction, maxSeqLen: Int) {
        self.prefill = prefill
        self.decode = decode
        self.dpdFn = dpd
        self.vae = vae
        self.maxSeqLen = maxSeqLen
    }

    func lmReset() throws {
        // Core ML zero-fills a new state; reads are masked to this stream's positions anyway, so a fresh
        // state only releases memory and makes runs independent.
        state = decode.model.makeState()
    }

    func lmPrefill(_ ids: [Int64], startPos: Int) throws -> [Float] {
        let piece = prefill.inputs[0].shape[1]  // ids [1, prefill_len]
        return try prefillInPieces(ids, startPos: startPos, piece: piece, maxSeqLen: maxSeqLen,
                                   runPiece: { chunk, start in try self.prefill.run([.ints(chunk), .ints([Int64(start)])], state: self.state) },
                                   decode: { token, pos in try self.lmDecode(token, pos: pos) })
    }

    func lmDecode(_ token: Int64, pos: Int) throws -> [Float] {
        try decode.run([.ints([token]), .ints([Int64(pos)])], state: state)
    }

    func dpd(z: [Float], angles: [Float], tokens: [Int64]) throws -> [Float] {
        try dpdFn.run([.floats(z), .floats(angles), .ints(tokens)], state: nil)
    }

    func vaeDecode(_ z: [Float]) throws -> [Float] {
        try vae.run([.floats(z)], state: nil)
    }

    var hasUnrolledSampler: Bool { sampler != nil }

    func dpdSampler(z: [Float], angles: [Float], target: [Float], tokens: [Int64], guidance: Float, steps: Int) throws -> [Float] {
        guard let sampler else { throw UnrolledSamplerUnavailable() }
        return try sampler.run([.floats(z), .floats(angles), .floats(target), .ints(tokens), .floats([guidance])], state: nil)
    }

    private static func check(_ comp: String, _ method: String, _ inputs: [TensorSpec], _ outputs: [TensorSpec],
                              _ ins: [String], _ outs: [String]) throws {
        let got = (inputs.map(\.name), outputs.map(\.name))
        guard got.0 == ins, got.1 == outs, inputs.allSatisfy({ CoreMLNames.inputDtypes.contains($0.dtype) }) else {
            throw BundleException("\(comp).\(method): the bundle declares \(got.0) -> \(got.1), this app expects \(ins) -> \(outs) "
                + "with \(CoreMLNames.inputDtypes) inputs; re-export the bundle with the matching melody-edge")
        }
    }

    /// A compiled .mlmodelc for `package`: MLModel loads only compiled models, and compiling a large
    /// package takes seconds to minutes, so the result is kept (keyed by the manifest's sha256).
    /// A bundle that ships a compiled `.mlmodelc` is loaded as it is: compiling it again would fail.
    private static func compiledModel(_ package: URL, digest: String?) async throws -> URL {
        let fm = FileManager.default
        if package.pathExtension == "mlmodelc" {
            guard fm.fileExists(atPath: package.path) else {
                throw BundleException("\(package.path) is listed in the manifest but missing: copy the whole bundle directory")
            }
            return package
        }
        let cache = try fm.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("compiled", isDirectory: true)
        try fm.createDirectory(at: cache, withIntermediateDirectories: true)
        let key = digest.map { String($0.prefix(16)) } ?? package.deletingPathExtension().lastPathComponent
        let target = cache.appendingPathComponent("\(key).mlmodelc", isDirectory: true)
        if digest != nil, fm.fileExists(atPath: target.path) { return target }
        let temporary = try await MLModel.compileModel(at: package)  // iOS 16+ async form; lands in a temporary folder
        try? fm.removeItem(at: target)
        try fm.moveItem(at: temporary, to: target)
        return target
    }
}

/// One Core ML function with the manifest's tensor specs: positional inputs in, the first output out.
private struct CoreMLFunction {
    enum Feed {
        case floats([Float])
        case ints([Int64])
    }

    let model: MLModel
    let inputs: [TensorSpec]
    let outputs: [TensorSpec]

    func run(_ feeds: [Feed], state: MLState?) throws -> [Float] {
        var features: [String: Any] = [:]
        for (spec, feed) in zip(inputs, feeds) {
            features[spec.name] = MLFeatureValue(multiArray: try CoreMLFunction.multiArray(feed, spec))
        }
        let provider = try MLDictionaryFeatureProvider(dictionary: features)
        let options = MLPredictionOptions()
        let out: MLFeatureProvider
        if let state {
            out = try model.prediction(from: provider, using: state, options: options)  // iOS 18 stateful form
        } else {
            out = try model.prediction(from: provider, options: options)
        }
        guard let array = out.featureValue(for: outputs[0].name)?.multiArrayValue else {
            throw BundleException("Core ML returned no '\(outputs[0].name)'")
        }
        // converting: reads any scalar type and any strides, in logical (row-major) order.
        return MLShapedArray<Float>(converting: array).scalars
    }

    private static func multiArray(_ feed: Feed, _ spec: TensorSpec) throws -> MLMultiArray {
        switch (feed, spec.dtype) {
        case (.floats(let v), "float32") where v.count == spec.count:
            return MLMultiArray(MLShapedArray<Float>(scalars: v, shape: spec.shape))
        case (.ints(let v), "int32") where v.count == spec.count:
            return MLMultiArray(MLShapedArray<Int32>(scalars: v.map { Int32(truncatingIfNeeded: $0) }, shape: spec.shape))
        default:
            throw BundleException("input '\(spec.name)' expects \(spec.dtype) \(spec.shape); the app built something else")
        }
    }
}
