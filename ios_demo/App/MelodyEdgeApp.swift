import SwiftUI

// The app target's entry point. The deployment target is iOS 18.0: the `coreml` bundle's LM keeps its
// KV cache in Core ML state (MLState, iOS 18) and its functions are picked with
// MLModelConfiguration.functionName (iOS 18); `executorch-coreml` bundles are lowered for iOS 18 too.
@main
struct MelodyEdgeApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}
