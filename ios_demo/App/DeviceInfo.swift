import Foundation
import MelodyEdgeCore
import UIKit

enum DeviceInfo {
    /// The app's physical memory footprint in MB (what Xcode's memory gauge and jetsam count), via
    /// task_info(TASK_VM_INFO). iOS has no /proc; this stands in for the report's "rss_mb" fields.
    static func footprintMB() -> Double {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size)
        let result = withUnsafeMutablePointer(to: &info) { pointer in
            pointer.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        return result == KERN_SUCCESS ? Double(info.phys_footprint) / 1_048_576 : .nan
    }

    /// The hardware model identifier, e.g. "iPhone16,1" (UIDevice only says "iPhone").
    static func modelIdentifier() -> String {
        var system = utsname()
        uname(&system)
        return withUnsafeBytes(of: &system.machine) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// The report's `machine` object (runtime/bench.schema.json requires platform and cpu_count).
    @MainActor static func machine() -> JSONValue {
        LatencyReport.machineJSON(
            platform: "\(UIDevice.current.systemName) \(UIDevice.current.systemVersion)",
            cpuCount: ProcessInfo.processInfo.activeProcessorCount,
            processor: modelIdentifier())
    }
}
