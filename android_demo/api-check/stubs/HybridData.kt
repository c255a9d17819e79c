// Stand-in for the Android / fbjni / SoLoader class ExecuTorch's Kotlin API references (never run).
package com.facebook.jni

class HybridData {
    val isValid: Boolean get() = true
    fun resetNative() {}
}
