// Two modules: the platform-free core (plain Kotlin/JVM, also compiled by tests/apps with kotlinc)
// and the Android shell that depends on it.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    // Every repository is declared here, so a module cannot quietly pull from elsewhere.
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral() // org.pytorch:executorch-android and its fbjni / soloader dependencies
    }
}

rootProject.name = "melody-edge-android"
include(":core", ":app")
