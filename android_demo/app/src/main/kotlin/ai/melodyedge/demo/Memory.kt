package ai.melodyedge.demo

import android.os.Debug
import android.system.Os
import android.system.OsConstants
import java.io.File

/** Memory figures for the screen and the report. */
object Memory {
    /** Resident set size in MiB from /proc/self/statm, as `melody-edge bench` measures it (runtime/bench.py). */
    fun rssMb(): Double = try {
        val pages = File("/proc/self/statm").readText().trim().split(" ")[1].toLong()
        pages * Os.sysconf(OsConstants._SC_PAGESIZE) / (1024.0 * 1024.0)
    } catch (e: Exception) {
        nativeHeapMb() // statm unreadable: the native heap holds the runtime's arenas, the largest part
    }

    /** Bytes malloc'ed by native code (ExecuTorch's planned memory, XNNPACK's packed weights). */
    fun nativeHeapMb(): Double = Debug.getNativeHeapAllocatedSize() / (1024.0 * 1024.0)
}
