// Stand-in for fbjni's annotation, so ExecuTorch's Kotlin API type-checks on a plain JVM. Never run.

package com.facebook.jni.annotations

annotation class DoNotStrip
