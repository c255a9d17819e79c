// Stand-in for the Android / fbjni / SoLoader class ExecuTorch's Kotlin API references (never run).
package android.util

object Log {
    @JvmStatic fun e(tag: String?, msg: String?): Int = 0
    @JvmStatic fun e(tag: String?, msg: String?, tr: Throwable?): Int = 0
    @JvmStatic fun w(tag: String?, msg: String?): Int = 0
    @JvmStatic fun i(tag: String?, msg: String?): Int = 0
    @JvmStatic fun d(tag: String?, msg: String?): Int = 0
}
