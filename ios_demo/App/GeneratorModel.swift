import CoreML
import Foundation
import MelodyEdgeCore
import UIKit

/// What the screen shows while a stream runs (a snapshot taken on the generation task).
struct Figures {
    var timeToFirstAudio: Double?
    var chunkBudget = 0.0
    var rows: [ChunkRecord] = []
    var p50: Double?
    var p95: Double?
    var realTimeFactor: Double?
    var memoryMB = 0.0
    var peakMB = 0.0
    var underruns = 0
}

enum ComputeChoice: String, CaseIterable, Identifiable {
    case all = "All", neuralEngine = "CPU + ANE", gpu = "CPU + GPU", cpu = "CPU"

    var id: String { rawValue }
    var units: MLComputeUnits {
        switch self {
        case .all: return .all
        case .neuralEngine: return .cpuAndNeuralEngine
        case .gpu: return .cpuAndGPU
        case .cpu: return .cpuOnly
        }
    }
}

/// The screen's state. Generation runs in a detached task (model calls take seconds and must not
/// block the main thread); it posts snapshots back to the main actor after every chunk.
@MainActor
final class GeneratorModel: ObservableObject {
    @Published private(set) var bundles: [BundleEntry] = []
    @Published var selected: BundleEntry? { didSet { loadManifest() } }
    @Published private(set) var manifest: Manifest?
    @Published var presetIndex = 0
    @Published var seconds = 20.0
    /// Generate until Stop: the core slides its window forever, but its settings need a finite length,
    /// so the run asks for `untilStopSeconds`. Memory stays bounded: a fixed window, the report's last
    /// MAX_REPORT_CHUNKS records, and an audio queue that waits when full (AudioStreamer).
    @Published var untilStop = false
    static let untilStopSeconds = 24 * 60 * 60.0
    @Published var seed = 0
    @Published var computeUnits = ComputeChoice.all
    @Published private(set) var running = false
    @Published private(set) var status = "Copy a bundle into the app's Documents (see README), then pick it."
    @Published private(set) var figures = Figures()
    @Published private(set) var reportJSON: String?

    private var task: Task<Void, Never>?
    private var streamer: AudioStreamer?
    /// Bumped by every Generate: a stopped run's late updates must not overwrite the next run's screen.
    private var runID = 0

    func refresh() {
        bundles = BundleLibrary.scan()
        if selected == nil || !bundles.contains(where: { $0.id == selected?.id }) {
            selected = bundles.first(where: \.usable)
        }
    }

    private func loadManifest() {
        manifest = nil
        presetIndex = 0
        guard let entry = selected else { return }
        do {
            manifest = try Manifest.load(bundleDir: entry.url)
            status = entry.usable ? "Ready: \(entry.summary)" : entry.summary
        } catch {
            status = "\(error)"
        }
    }

    func generate() {
        guard !running, let entry = selected, entry.usable, let manifest, !manifest.presets.isEmpty else { return }
        streamer?.stop()  // the previous stream's tail may still be playing
        let preset = manifest.presets[min(presetIndex, manifest.presets.count - 1)]
        let length = untilStop ? GeneratorModel.untilStopSeconds : seconds
        let lengthText = untilStop ? "until Stop" : "\(Int(seconds)) s"
        let settings = GenerationSettings(seconds: length, steps: manifest.steps, guidanceScale: manifest.guidanceScale,
                                          temperature: manifest.temperature, topK: manifest.topK, seed: UInt64(seed))
        let units = computeUnits.units
        let machine = DeviceInfo.machine()
        let streamer: AudioStreamer
        do {
            streamer = try AudioStreamer(sampleRate: manifest.spec.sampleRate)
        } catch {
            status = "Audio output failed: \(error)"
            return
        }
        self.streamer = streamer
        runID += 1
        let id = runID
        running = true
        reportJSON = nil
        figures = Figures()
        status = "Loading \(entry.title)…"
        UIApplication.shared.isIdleTimerDisabled = true  // a long stream should not lock the screen
        task = Task.detached(priority: .userInitiated) { [weak self] in
            let post: (String) -> Void = { text in Task { @MainActor in self?.update(id) { $0.status = text } } }
            do {
                let (runner, backend) = try await GeneratorModel.makeRunner(entry.url, manifest, units, post)
                post("Generating \(preset.name) (\(lengthText))…")
                let counting = CountingRunner(runner)
                // The unrolled sampler where the runner loaded it (the manifest prefers it on this bundle).
                let unrolled = runner.hasUnrolledSampler ? manifest.unrolledSamplerSteps : 0
                let core = StreamingCore(runner: counting, spec: manifest.spec, unrolledSamplerSteps: unrolled)
                let report = LatencyReport(name: "\(manifest.target)/\(manifest.recipe)", backend: backend,
                                           model: manifest.model, steps: settings.steps, spec: manifest.spec,
                                           rssMb: DeviceInfo.footprintMB)
                try core.stream(prefixCodes: preset.tokens, settings: settings) { chunk in
                    streamer.schedule(chunk.audio)
                    report.onChunk(chunk)
                    let snapshot = GeneratorModel.snapshot(report, underruns: streamer.underruns)
                    Task { @MainActor in self?.update(id) { $0.figures = snapshot } }
                    return !Task.isCancelled  // Stop: the core returns after this chunk
                }
                let cancelled = Task.isCancelled
                let json = report.toJSON(counts: counting.counts, machine: machine, created: GeneratorModel.timestamp(),
                                         bundleBytes: manifest.bundleBytes)
                await MainActor.run { self?.update(id) { $0.finish(json: json, cancelled: cancelled) } }
            } catch {
                await MainActor.run { self?.update(id) { $0.finish(error: error) } }
            }
        }
    }

    /// Silences playback now; generation ends after the chunk being computed (a model call cannot be
    /// interrupted), and `running` stays true until then so a new run never overlaps it.
    func stop() {
        guard running else { return }
        task?.cancel()
        streamer?.stop()
        status = "Stopping after the current chunk…"
    }

    func copyReport() {
        UIPasteboard.general.string = reportJSON
        status = "Report copied (melody-edge bench --json schema)."
    }

    private func update(_ id: Int, _ change: (GeneratorModel) -> Void) {
        if id == runID { change(self) }
    }

    private func finish(json: String, cancelled: Bool) {
        reportJSON = json
        running = false
        task = nil
        status = cancelled ? "Stopped; the report covers the chunks so far." : "Done; the tail is still playing."
        UIApplication.shared.isIdleTimerDisabled = false
    }

    private func finish(error: Error) {
        running = false
        task = nil
        status = "Failed: \(error)"
        streamer?.stop()
        UIApplication.shared.isIdleTimerDisabled = false
    }

    /// The runner for the bundle's target, and the backend name the report gives (runtime's names).
    nonisolated private static func makeRunner(_ url: URL, _ manifest: Manifest, _ units: MLComputeUnits,
                                               _ post: @escaping (String) -> Void) async throws -> (ModelRunner, String) {
        try manifest.checkFilesExist(bundleDir: url)  // a folder copied in part: say which file, not a Core ML error
        switch manifest.target {
        case "coreml":
            post("Compiling Core ML packages (first load only) and loading…")
            return (try await CoreMLRunner.load(bundle: url, manifest: manifest, units: units, progress: post), "coreml")
        case "executorch-coreml", "executorch-xnnpack":
            post("Loading ExecuTorch programs…")
            return (try ExecuTorchRunner(bundle: url, manifest: manifest), "executorch")
        default:
            throw BundleException("\(manifest.target) bundles do not run on iOS; export --target coreml or executorch-xnnpack")
        }
    }

    nonisolated private static func snapshot(_ report: LatencyReport, underruns: Int) -> Figures {
        let full = report.records.filter { $0.tokens > 0 }.map(\.latency)
        return Figures(timeToFirstAudio: report.firstAudio, chunkBudget: report.chunkAudioSeconds, rows: report.records,
                       p50: full.isEmpty ? nil : percentile(full, 50), p95: full.isEmpty ? nil : percentile(full, 95),
                       realTimeFactor: report.realTimeFactor, memoryMB: report.records.last?.rssMb ?? 0,
                       peakMB: report.peakRss, underruns: underruns)
    }

    /// runtime/bench.py's "created" format.
    nonisolated private static func timestamp() -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: Date())
    }
}
