package ai.melodyedge.demo

import ai.melodyedge.core.BundleContract
import ai.melodyedge.core.BundleException
import ai.melodyedge.core.Manifest
import ai.melodyedge.core.dbl
import ai.melodyedge.core.int
import ai.melodyedge.core.obj
import ai.melodyedge.core.parseJson
import java.io.File
import java.security.MessageDigest

/** The only target this app runs: Core ML delegates do not exist on Android, ONNX needs another runtime. */
const val ANDROID_TARGET = "executorch-xnnpack"

/** A bundle that passed [Bundles.open]'s checks, with the manifest fields the core's [Manifest] leaves out. */
class CheckedBundle(
    val dir: File,
    val manifest: Manifest,
    val modelName: String,
    val temperature: Double,
    val topK: Int,
    val bytes: Long,
) {
    val name: String get() = dir.name

    /** The run name `melody-edge bench` gives a bundle (runtime/bench.py), so reports line up. */
    val runName: String get() = "${manifest.target}/${manifest.recipe}"
}

/** Finding bundle folders and refusing broken ones with a message that says what to do. */
object Bundles {
    /** Every folder under the roots; ones without a manifest are listed too, so the error can be shown. */
    fun list(roots: List<File>): List<File> =
        roots.flatMap { root -> root.listFiles()?.filter { it.isDirectory }.orEmpty() }.sortedBy { it.name }

    /** Parses and validates [dir]: manifest schema, target, component files, sha256 of every program. */
    fun open(dir: File): CheckedBundle {
        val manifest = Manifest.load(dir) // schema version, format, stream/sampler keys, required components
        if (manifest.target != ANDROID_TARGET) {
            throw BundleException(
                "$dir holds a '${manifest.target}' bundle; this app runs $ANDROID_TARGET bundles: " +
                    "melody-edge export --target $ANDROID_TARGET --recipe int8 --out DIR",
            )
        }
        val root = parseJson(File(dir, BundleContract.MANIFEST_FILE).readText())
        checkFiles(dir, root, manifest)
        val sampler = root.obj("sampler")
        return CheckedBundle(
            dir,
            manifest,
            modelName = root.obj("model")["name"] as? String ?: "?",
            temperature = sampler.dbl("temperature"),
            topK = sampler.int("top_k"),
            bytes = sizeOf(dir, root),
        )
    }

    /** Every listed file must exist; each program's sha256 must match (cheap next to loading it). */
    private fun checkFiles(dir: File, root: Any?, manifest: Manifest) {
        val files = root.obj("files")
        for (name in files.keys) {
            val f = File(dir, name)
            if (!f.exists()) throw BundleException("$f is listed in the manifest but missing: copy the whole bundle directory")
        }
        for (component in BundleContract.REQUIRED_COMPONENTS) {
            val name = manifest.components.getValue(component)["file"] as? String
                ?: throw BundleException("manifest: component '$component' names no file")
            val f = File(dir, name)
            if (!f.isFile) throw BundleException("$f (component '$component') is missing: copy the whole bundle directory")
            val want = (files[name] as? Map<*, *>)?.get("sha256") as? String
                ?: throw BundleException("manifest: no sha256 for $name; re-export the bundle")
            val got = sha256(f)
            if (got != want) {
                throw BundleException(
                    "$f: sha256 ${got.take(12)}… does not match the manifest (${want.take(12)}…): " +
                        "the file is truncated or altered; push it again or re-export the bundle",
                )
            }
        }
    }

    /** What `melody-edge bench` reports as bundle_bytes: every listed file or folder, summed. */
    private fun sizeOf(dir: File, root: Any?): Long =
        root.obj("files").keys.sumOf { name -> File(dir, name).walkTopDown().filter { it.isFile }.sumOf { it.length() } }

    fun sha256(file: File): String {
        val digest = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { input ->
            val block = ByteArray(1 shl 20)
            while (true) {
                val n = input.read(block)
                if (n < 0) break
                digest.update(block, 0, n)
            }
        }
        return digest.digest().joinToString("") { "%02x".format(it) }
    }
}
