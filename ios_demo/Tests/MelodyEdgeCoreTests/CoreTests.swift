import Foundation
import XCTest
@testable import MelodyEdgeCore

// `swift test` on a Mac (never run here: no Swift toolchain on the Linux host). The expected numbers
// come from runtime/rng.py; tests/apps/test_ios_shell.py recomputes them so they cannot drift.
final class CoreTests: XCTestCase {
    func testRngMatchesPython() {
        var rng = PortableRng(seed: 7, stream: 2)
        XCTAssertEqual([rng.uniform(), rng.uniform(), rng.uniform()],
                       [0.09829254543297827, 0.5458522188415232, 0.7386325191166669])
        var normals = PortableRng(seed: 7, stream: 2)
        XCTAssertEqual(normals.normal(1), [-0.43614784])
    }

    func testManifestErrorsNameTheFix() {
        XCTAssertThrowsError(try Manifest.parse(["schema_version": 99], source: "m.json")) { error in
            XCTAssertEqual("\(error)", "m.json: schema 99 is newer than this app understands (1); update the app")
        }
        XCTAssertThrowsError(try Manifest.parse(["schema_version": 1, "format": "x"], source: "m.json")) { error in
            XCTAssertEqual("\(error)", "m.json: format x is not melody-edge-bundle")
        }
    }

    func testPrefillPiecesRightAlignsTheLastPiece() throws {
        var starts: [Int] = []
        _ = try prefillInPieces([1, 2, 3, 4, 5], startPos: 12, piece: 2, maxSeqLen: 64,
                                runPiece: { _, start in starts.append(start); return [0, 0, 0, 0] },
                                decode: { _, _ in XCTFail("no decode expected"); return [] })
        XCTAssertEqual(starts, [12, 14, 15])
    }

    func testReportHasTheBenchKeys() throws {
        let spec = StreamSpec(sampleRate: 24000, hopLength: 96, latentChannels: 4, chunkFrames: 625, chunks: 4,
                              framesPerToken: 10, prefixLevels: 12, prefixCodebookSize: 1024, vocabSize: 1024,
                              vaeContextFrames: 8, lmMaxSeqLen: 512)
        var t = 0.0
        let report = LatencyReport(name: "n", backend: "b", model: "m", steps: 4, spec: spec, rssMb: { 100 },
                                   clock: { t += 0.5; return t })
        report.onChunk(AudioChunk(index: 0, audio: [Float](repeating: 0, count: 48000), startSample: 0,
                                  tokens: [1, 2], lmSeconds: 0.1, dpdSeconds: 0.2, vaeSeconds: 0.05))
        let json = report.toJSON(counts: ["dpd": 8], machine: LatencyReport.machineJSON(platform: "p", cpuCount: 6, processor: "x"),
                                 created: "now", bundleBytes: 10)
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let run = try XCTUnwrap((root["runs"] as? [[String: Any]])?.first)
        XCTAssertEqual(run["kind"] as? String, "bundle")
        XCTAssertEqual(run["musiclm_nfe_per_10s"] as? Int, 6250)
        XCTAssertEqual((run["chunks"] as? [Any])?.count, 1)
    }

    func testReportKeepsTheLastChunksAndTotalsAll() {
        let spec = StreamSpec(sampleRate: 24000, hopLength: 96, latentChannels: 4, chunkFrames: 625, chunks: 4,
                              framesPerToken: 10, prefixLevels: 12, prefixCodebookSize: 1024, vocabSize: 1024,
                              vaeContextFrames: 8, lmMaxSeqLen: 512)
        let report = LatencyReport(name: "n", backend: "b", model: "m", steps: 2, spec: spec, rssMb: { 1 },
                                   clock: { 0 }, maxChunks: 3)
        for g in 0..<5 {
            report.onChunk(AudioChunk(index: g, audio: [Float](repeating: 0, count: 24000), startSample: 24000 * g,
                                      tokens: [Int](repeating: 1, count: 62), lmSeconds: 0.5, dpdSeconds: 0.25, vaeSeconds: 0.1))
        }
        XCTAssertEqual(report.records.map(\.index), [2, 3, 4])
        XCTAssertEqual(report.audioSeconds, 5.0)
    }
}
