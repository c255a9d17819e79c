// Stand-in for the Android / fbjni / SoLoader class ExecuTorch's Kotlin API references (never run).
package com.facebook.soloader.nativeloader

class SystemDelegate

object NativeLoader {
    @JvmStatic fun isInitialized(): Boolean = true
    @JvmStatic fun init(delegate: SystemDelegate) {}
    @JvmStatic fun loadLibrary(name: String): Boolean = true
}
