import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// A plain Kotlin/JVM library: no Android plugin, so nothing Android can creep into the core.
// Default source sets (src/main/kotlin, src/test/kotlin) are the paths tests/apps compiles with kotlinc.
plugins {
    alias(libs.plugins.kotlin.jvm)
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}
