import ExecuTorch
import Foundation
import MelodyEdgeCore

/// Runs an `executorch-xnnpack` or `executorch-coreml` bundle (.pte per component) with the ExecuTorch
/// Swift API (`Module`, `Tensor`, `Value`). Inputs are positional, in the manifest's shapes; integer
/// inputs are int64 here (only the `coreml` target narrows them to int32).
///
/// The LM runs every id through `decode`. Its two methods share the KV cache as mutable buffers
/// exported with `share_mutable_buffers=True`; the C++ Module sees one cache only when it is built
/// with `share_memory_arenas = true` (extension/module/module.h), and the Objective-C/Swift `Module`
/// does not pass that flag (ExecuTorchModule.mm, v1.4.1 up to main of 2026-08-22). A prefill would then
/// write a cache decode never reads. Decode-only is runtime/backend.py's exact fallback: slower
/// (one call per id at each window slide), never wrong.
final class ExecuTorchRunner: ModelRunner {
    private let lm: Module, dpdModule: Module, vae: Module
    private let dpdInputs: [TensorSpec], vaeInputs: [TensorSpec]
    /// The unrolled T-step sampler, loaded only where the manifest prefers it.
    private let sampler: Module?
    private let samplerInputs: [TensorSpec]

    init(bundle: URL, manifest: Manifest) throws {
        func module(_ comp: String, _ methods: [String]) throws -> Module {
            let path = bundle.appendingPathComponent(try manifest.file(comp, methods[0])).path
            let m = Module(filePath: path, loadMode: .mmap)  // mmap: weights are paged in, not copied
            let names = try m.methodNames()
            for method in methods {
                guard names.contains(method) else {
                    throw BundleException("\(path): no method '\(method)' (has \(names.sorted())); re-export the bundle")
                }
                try m.load(method)  // load now, so the first chunk's latency is not a load
            }
            return m
        }
        lm = try module("lm", ["decode"])
        dpdModule = try module("dpd", ["forward"])
        vae = try module("vae_decoder", ["forward"])
        dpdInputs = try manifest.tensors("dpd", "forward").inputs
        vaeInputs = try manifest.tensors("vae_decoder", "forward").inputs
        if manifest.unrolledSamplerSteps > 0 {
            sampler = try module("dpd_sampler", ["forward"])
            samplerInputs = try manifest.tensors("dpd_sampler", "forward").inputs
        } else {
            sampler = nil
            samplerInputs = []
        }
    }

    var hasUnrolledSampler: Bool { sampler != nil }

    func lmReset() throws {
        // Nothing to clear: every read of the cache is masked to the positions written in this stream.
    }

    func lmPrefill(_ ids: [Int64], startPos: Int) throws -> [Float] {
        var logits: [Float] = []
        for (i, id) in ids.enumerated() { logits = try lmDecode(id, pos: startPos + i) }
        return logits
    }

    func lmDecode(_ token: Int64, pos: Int) throws -> [Float] {
        try run(lm, "decode", [Tensor<Int64>([token], shape: [1, 1]), Tensor<Int64>([Int64(pos)], shape: [1])])
    }

    func dpd(z: [Float], angles: [Float], tokens: [Int64]) throws -> [Float] {
        try run(dpdModule, "forward", [Tensor<Float>(z, shape: dpdInputs[0].shape),
                                       Tensor<Float>(angles, shape: dpdInputs[1].shape),
                                       Tensor<Int64>(tokens, shape: dpdInputs[2].shape)])
    }

    func vaeDecode(_ z: [Float]) throws -> [Float] {
        try run(vae, "forward", [Tensor<Float>(z, shape: vaeInputs[0].shape)])
    }

    func dpdSampler(z: [Float], angles: [Float], target: [Float], tokens: [Int64], guidance: Float, steps: Int) throws -> [Float] {
        guard let sampler else { throw UnrolledSamplerUnavailable() }
        return try run(sampler, "forward", [Tensor<Float>(z, shape: samplerInputs[0].shape),
                                            Tensor<Float>(angles, shape: samplerInputs[1].shape),
                                            Tensor<Float>(target, shape: samplerInputs[2].shape),
                                            Tensor<Int64>(tokens, shape: samplerInputs[3].shape),
                                            Tensor<Float>([guidance], shape: samplerInputs[4].shape)])
    }

    /// Executes `method` and copies its first output out (the next call may reuse the output's memory).
    private func run(_ module: Module, _ method: String, _ inputs: [ValueConvertible]) throws -> [Float] {
        let outputs: [Value] = try module.execute(method, inputs)
        guard let out: Tensor<Float> = outputs.first?.tensor() else {
            throw BundleException("\(method) returned no float32 tensor")
        }
        return out.scalars()
    }
}
