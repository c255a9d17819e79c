import Foundation
import MelodyEdgeCore

/// A bundle folder in the app's Documents (shared with Finder / the Files app by UIFileSharingEnabled).
struct BundleEntry: Identifiable, Hashable {
    let url: URL
    let title: String
    /// "coreml · fp16 · tiny" or why it cannot run here.
    let summary: String
    let usable: Bool

    var id: URL { url }
}

enum BundleLibrary {
    /// The targets this app runs; `onnx` bundles are for the host runtime and Android.
    static let targets = ["coreml", "executorch-coreml", "executorch-xnnpack"]

    static var documents: URL {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
    }

    /// Every folder of Documents that holds a manifest.json, and Documents itself when it does (a bundle
    /// copied with `devicectl device copy to` can land flattened into Documents).
    static func scan() -> [BundleEntry] {
        let fm = FileManager.default
        let children = (try? fm.contentsOfDirectory(at: documents, includingPropertiesForKeys: [.isDirectoryKey])) ?? []
        let folders = [documents] + children.sorted { $0.lastPathComponent < $1.lastPathComponent }
        return folders
            .filter { fm.fileExists(atPath: $0.appendingPathComponent(BundleContract.MANIFEST_FILE).path) }
            .map(entry)
    }

    private static func entry(_ url: URL) -> BundleEntry {
        let title = url == documents ? "Documents" : url.lastPathComponent
        do {
            let m = try Manifest.load(bundleDir: url)
            guard targets.contains(m.target) else {
                return BundleEntry(url: url, title: title, summary: "\(m.target): not an iOS target; export --target coreml", usable: false)
            }
            try m.checkFilesExist(bundleDir: url)  // listed as unusable, with the missing file named
            return BundleEntry(url: url, title: title, summary: "\(m.target) · \(m.recipe) · \(m.model)", usable: true)
        } catch {
            return BundleEntry(url: url, title: title, summary: "\(error)", usable: false)
        }
    }
}
