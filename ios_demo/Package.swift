// swift-tools-version:5.9
// The platform-free core as a library (Foundation only), for the Xcode app target to depend on
// (README: "Build"). Swift 5 language mode: the shell passes Core ML / ExecuTorch objects into a
// detached task, which Swift 6's strict concurrency checking would reject.
import PackageDescription

let package = Package(
    name: "MelodyEdgeCore",
    // String forms: PackageDescription 5.9 has no .v18 constant. iOS 18 for Core ML states (see README).
    platforms: [.iOS("18.0"), .macOS("15.0")],
    products: [.library(name: "MelodyEdgeCore", targets: ["MelodyEdgeCore"])],
    targets: [
        .target(name: "MelodyEdgeCore", path: "Core"),
        .testTarget(name: "MelodyEdgeCoreTests", dependencies: ["MelodyEdgeCore"], path: "Tests/MelodyEdgeCoreTests"),
    ]
)
