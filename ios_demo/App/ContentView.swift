import MelodyEdgeCore
import SwiftUI

/// One screen: bundle, preset, Generate/Stop, the figures `melody-edge bench` reports, and Copy report.
struct ContentView: View {
    @StateObject private var model = GeneratorModel()
    @Environment(\.scenePhase) private var scenePhase

    var body: some View {
        NavigationStack {
            Form {
                bundleSection
                if let manifest = model.manifest, model.selected?.usable == true {
                    presetSection(manifest)
                }
                Section {
                    Button(model.running ? "Stop" : "Generate") {
                        if model.running { model.stop() } else { model.generate() }
                    }
                    .disabled(!model.running && model.selected?.usable != true)
                    Text(model.status).font(.footnote).foregroundStyle(.secondary)
                }
                figuresSection
                chunksSection
                Section {
                    Button("Copy report") { model.copyReport() }.disabled(model.reportJSON == nil)
                } footer: {
                    Text("JSON in the schema of `melody-edge bench --json` (runtime/bench.schema.json).")
                }
            }
            .navigationTitle("MeLoDy edge")
            .refreshable { model.refresh() }
        }
        .onAppear { model.refresh() }
        // Bundles copied in with Finder or the Files app show up when the app comes back.
        .onChange(of: scenePhase) { _, phase in
            if phase == .active && !model.running { model.refresh() }
        }
    }

    private var bundleSection: some View {
        Section("Bundle") {
            Picker("Bundle", selection: $model.selected) {
                Text("None").tag(BundleEntry?.none)
                ForEach(model.bundles) { entry in Text(entry.title).tag(BundleEntry?.some(entry)) }
            }
            .disabled(model.running)
            if let entry = model.selected {
                Text(entry.summary).font(.footnote).foregroundStyle(entry.usable ? Color.secondary : Color.red)
            }
            Button("Refresh list") { model.refresh() }.disabled(model.running)
        }
    }

    private func presetSection(_ manifest: Manifest) -> some View {
        Section("Preset") {
            Picker("Preset", selection: $model.presetIndex) {
                ForEach(Array(manifest.presets.enumerated()), id: \.offset) { index, preset in
                    Text(preset.name).tag(index)
                }
            }
            if manifest.presets.indices.contains(model.presetIndex) {
                Text(manifest.presets[model.presetIndex].prompt).font(.footnote).foregroundStyle(.secondary)
            }
            Stepper("Length \(Int(model.seconds)) s", value: $model.seconds, in: 5...120, step: 5)
                .disabled(model.untilStop)
            Toggle("Until Stop", isOn: $model.untilStop)
            Stepper("Seed \(model.seed)", value: $model.seed, in: 0...9999)
            if manifest.target == "coreml" {
                Picker("Compute units", selection: $model.computeUnits) {
                    ForEach(ComputeChoice.allCases) { Text($0.rawValue).tag($0) }
                }
            }
            LabeledContent("Sampler steps", value: "\(manifest.steps)")
            // Baked into the LM program at export (two cache rows): shown, not editable.
            LabeledContent("LM guidance", value: manifest.lmGuidanceScale == 1 ? "off" : String(format: "%g", manifest.lmGuidanceScale))
        }
        .disabled(model.running)
    }

    private var figuresSection: some View {
        let f = model.figures
        return Section("Figures") {
            LabeledContent("Time to first audio", value: seconds(f.timeToFirstAudio))
            LabeledContent("Chunk latency p50 / p95", value: "\(seconds(f.p50)) / \(seconds(f.p95))")
            LabeledContent("Chunk budget (audio per chunk)", value: seconds(f.chunkAudio))
            LabeledContent("Real-time factor", value: f.realTimeFactor.map { String(format: "%.2f", $0) } ?? "–")
            LabeledContent("Memory now / peak", value: String(format: "%.0f / %.0f MB", f.memoryMB, f.peakMB))
            LabeledContent("Playback gaps", value: "\(f.underruns)")
        }
    }

    private var chunksSection: some View {
        Section("Chunks") {
            ForEach(model.figures.rows, id: \.index) { row in
                HStack {
                    Text("#\(row.index)").monospacedDigit()
                    Spacer()
                    // Red: this chunk took longer than the audio it adds, so playback would stall.
                    Text(seconds(row.latency)).monospacedDigit()
                        .foregroundStyle(row.latency > model.figures.chunkBudget ? Color.red : Color.primary)
                    Text("LM \(seconds(row.lm)) · DPD \(seconds(row.dpd)) · VAE \(seconds(row.vae))")
                        .font(.caption).foregroundStyle(.secondary)
                }
            }
        }
    }

    private func seconds(_ value: Double?) -> String {
        value.map { String(format: "%.2f s", $0) } ?? "–"
    }
}

private extension Figures {
    var chunkAudio: Double? { chunkBudget > 0 ? chunkBudget : nil }
}
