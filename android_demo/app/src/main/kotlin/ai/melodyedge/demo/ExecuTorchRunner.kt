package ai.melodyedge.demo

import ai.melodyedge.core.BundleContract
import ai.melodyedge.core.BundleException
import ai.melodyedge.core.Manifest
import ai.melodyedge.core.ModelRunner
import java.io.Closeable
import java.io.File
import java.nio.FloatBuffer
import java.nio.LongBuffer
import org.pytorch.executorch.EValue
import org.pytorch.executorch.ExecutorchRuntimeException
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/** The org.pytorch:executorch-android version in gradle/libs.versions.toml (= pyproject's executorch pin). */
const val EXECUTORCH_VERSION = "1.5.1"

/**
 * [ModelRunner] over a bundle's .pte programs, called the way runtime/executorch_backend.py calls them:
 * lm.pte `decode` (token [1, 1] int64, pos [1] int64 -> logits [1, V]), dpd.pte `forward` (z [2, C, W],
 * angles [2, W] float32, tokens [2, S] int64 -> v [2, C, W]) and vae_decoder.pte `forward`
 * (z [1, C, R + chunk + R] -> audio [1, chunk * hop]); dpd_sampler.pte `forward` (z [1, C, W], angles [1, W],
 * target [1, W] float32, tokens [1, S], guidance [1] -> z [1, C, W]) where the manifest prefers it. Shapes come
 * from the manifest.
 *
 * Not thread-safe: one generation at a time (ExecuTorch's Module locks each call anyway).
 */
class ExecuTorchRunner(bundle: File, private val manifest: Manifest, numThreads: Int = 0) : ModelRunner, Closeable {
    private val spec = manifest.spec

    // Declared before the bindings below: they fill it while the object is constructed.
    private val loaded = LinkedHashMap<String, Module>()

    private val lmDecode: BoundMethod
    private val dpdForward: BoundMethod
    private val vaeForward: BoundMethod

    // The unrolled T-step sampler (dpd_sampler.pte), loaded only where the core will call it.
    private val samplerForward: BoundMethod?

    init {
        try {
            lmDecode = bind(bundle, numThreads, "lm", "decode", BundleContract.LM_DECODE_INPUTS)
            dpdForward = bind(bundle, numThreads, "dpd", "forward", BundleContract.DPD_FORWARD_INPUTS)
            vaeForward = bind(bundle, numThreads, "vae_decoder", "forward", BundleContract.VAE_DECODER_FORWARD_INPUTS)
            samplerForward = if (manifest.unrolledSamplerSteps > 0) {
                bind(bundle, numThreads, "dpd_sampler", "forward", BundleContract.DPD_SAMPLER_FORWARD_INPUTS)
            } else {
                null
            }
        } catch (e: Exception) {
            close() // free the programs already loaded before reporting the bad one
            throw e
        }
    }

    /** Backends each loaded method was delegated to (e.g. XnnpackBackend), for the status line. */
    val hasUnrolledSampler: Boolean get() = samplerForward != null

    val backends: Map<String, List<String>> = listOfNotNull(lmDecode, dpdForward, vaeForward, samplerForward).associate { m ->
        "${m.component}.${m.method}" to m.module.getMethodMetadata(m.method).backends.toList()
    }

    // The cache needs no clearing: every read is masked to positions written in this stream
    // (the same reasoning as ExecuTorchBackend.lm_reset).
    override fun lmReset() {}

    /**
     * Writes [ids] into the KV cache one `decode` call at a time, never through lm.pte's `prefill`.
     *
     * Why: the exporter puts the cache in mutable buffers shared by `prefill` and `decode`, which only
     * works when both methods use the same planned-memory arena. The Python runtime shares arenas across
     * a program's methods; the Java `Module` builds its C++ Module without `share_memory_arenas`
     * (extension/android/jni/jni_layer.cpp), so a cache written by `prefill` would be invisible to
     * `decode`. Decoding token by token is what runtime/backend.py's prefill_in_pieces already falls
     * back to, and it is exact; it costs one call per id (about 190 per window slide).
     * tests/apps/test_android_shell.py shows the split caches on the host with the same C++ Module.
     */
    override fun lmPrefill(ids: LongArray, startPos: Int): FloatArray {
        require(ids.isNotEmpty()) { "prefill needs at least one id" }
        require(startPos + ids.size <= spec.lmMaxSeqLen) {
            "prefill of ${ids.size} ids at $startPos runs past the LM's ${spec.lmMaxSeqLen} positions"
        }
        var logits = FloatArray(0)
        for (i in ids.indices) logits = lmDecode(ids[i], startPos + i)
        return logits
    }

    override fun lmDecode(token: Long, pos: Int): FloatArray {
        lmDecode.longs("token", longArrayOf(token))
        lmDecode.longs("pos", longArrayOf(pos.toLong()))
        return lmDecode.run(spec.vocabSize)
    }

    override fun dpd(z: FloatArray, angles: FloatArray, tokens: LongArray): FloatArray {
        dpdForward.floats("z", z)
        dpdForward.floats("angles", angles)
        dpdForward.longs("tokens", tokens)
        return dpdForward.run(z.size)
    }

    override fun dpdSampler(z: FloatArray, angles: FloatArray, target: FloatArray, tokens: LongArray, guidance: Float, steps: Int): FloatArray {
        val m = samplerForward ?: throw IllegalStateException("this bundle's unrolled sampler was not loaded")
        m.floats("z", z)
        m.floats("angles", angles)
        m.floats("target", target)
        m.longs("tokens", tokens)
        m.floats("guidance", floatArrayOf(guidance))
        return m.run(z.size)
    }

    override fun vaeDecode(z: FloatArray): FloatArray {
        vaeForward.floats("z", z)
        return vaeForward.run(spec.chunkFrames * spec.hopLength)
    }

    override fun close() {
        loaded.values.forEach { it.destroy() }
        loaded.clear()
    }

    /** Loads [component]'s program once and checks [method]'s inputs against the contract and the manifest. */
    private fun bind(bundle: File, numThreads: Int, component: String, method: String, names: List<String>): BoundMethod {
        val entry = manifest.components[component] ?: throw BundleException("manifest: component '$component' is missing")
        val file = File(bundle, entry["file"] as? String ?: throw BundleException("manifest: $component has no 'file'"))
        val specs = methodInputs(entry, component, method)
        val found = specs.map { it["name"] }
        if (found != names) {
            throw BundleException(
                "$file: $component.$method takes inputs $found, this app expects $names; re-export the bundle with this melody-edge",
            )
        }
        val module = loaded[file.path] ?: load(file, numThreads)
        if (method !in module.getMethods()) {
            throw BundleException("$file has no method '$method' (it has ${module.getMethods().toList()}); re-export the bundle")
        }
        try {
            module.loadMethod(method) // now, so the first call's load does not land in the time to first audio
        } catch (e: ExecutorchRuntimeException) {
            throw BundleException("$file: ExecuTorch cannot load method '$method' (error ${e.errorCode}: ${e.message})")
        }
        return BoundMethod(component, method, module, specs.map { Input(file, component, method, it) })
    }

    private fun load(file: File, numThreads: Int): Module {
        if (!file.isFile) throw BundleException("$file is missing: copy the whole bundle directory (see README)")
        val module = try {
            // mmap: weights are paged in from the file instead of copied onto the heap (lower RSS).
            Module.load(file.absolutePath, Module.LOAD_MODE_MMAP, numThreads)
        } catch (e: ExecutorchRuntimeException) {
            throw BundleException(
                "$file: ExecuTorch cannot load this program (error ${e.errorCode}: ${e.message}); it must be exported " +
                    "with executorch $EXECUTORCH_VERSION for the executorch-xnnpack target",
            )
        }
        loaded[file.path] = module
        return module
    }

    @Suppress("UNCHECKED_CAST")
    private fun methodInputs(entry: Map<String, Any?>, component: String, method: String): List<Map<String, Any?>> {
        val methods = entry["methods"] as? Map<String, Any?> ?: throw BundleException("manifest: $component has no 'methods'")
        val m = methods[method] as? Map<String, Any?> ?: throw BundleException("manifest: $component has no method '$method'")
        return m["inputs"] as? List<Map<String, Any?>> ?: throw BundleException("manifest: $component.$method has no 'inputs'")
    }
}

/** One input of a method: a direct buffer allocated once and refilled for every call. */
private class Input(file: File, component: String, method: String, spec: Map<String, Any?>) {
    val name = spec["name"] as String
    val dtype = spec["dtype"] as? String ?: throw BundleException("manifest: $component.$method input has no dtype")
    val shape = (spec["shape"] as List<*>).map { (it as Number).toLong() }.toLongArray()
    val size = shape.fold(1L) { a, b -> a * b }.toInt()
    private val floats: FloatBuffer? = if (dtype == "float32") Tensor.allocateFloatBuffer(size) else null
    private val longs: LongBuffer? = if (dtype == "int64") Tensor.allocateLongBuffer(size) else null
    val tensor: Tensor = when {
        floats != null -> Tensor.fromBlob(floats, shape)
        longs != null -> Tensor.fromBlob(longs, shape)
        else -> throw BundleException("$file: $component.$method input '$name' has dtype $dtype; the app feeds float32 and int64 only")
    }

    fun put(values: FloatArray) {
        val buf = floats ?: throw IllegalStateException("input '$name' is $dtype, not float32")
        require(values.size == size) { "input '$name' needs $size values (shape ${shape.toList()}), got ${values.size}" }
        buf.rewind()
        buf.put(values)
    }

    fun put(values: LongArray) {
        val buf = longs ?: throw IllegalStateException("input '$name' is $dtype, not int64")
        require(values.size == size) { "input '$name' needs $size values (shape ${shape.toList()}), got ${values.size}" }
        buf.rewind()
        buf.put(values)
    }
}

/** A method of a loaded program with its inputs, passed in the contract's order. */
private class BoundMethod(val component: String, val method: String, val module: Module, private val inputs: List<Input>) {
    private fun input(name: String) =
        inputs.firstOrNull { it.name == name } ?: throw IllegalArgumentException("$component.$method has no input '$name'")

    fun floats(name: String, values: FloatArray) = input(name).put(values)

    fun longs(name: String, values: LongArray) = input(name).put(values)

    /** Runs the method and copies its first output out (it aliases the method's memory until the next call). */
    fun run(expected: Int): FloatArray {
        val outputs = try {
            module.execute(method, *Array(inputs.size) { EValue.from(inputs[it].tensor) })
        } catch (e: ExecutorchRuntimeException) {
            throw IllegalStateException("$component.$method failed in ExecuTorch (error ${e.errorCode}): ${e.message}", e)
        }
        val out = outputs[0].toTensor().dataAsFloatArray
        check(out.size == expected) { "$component.$method returned ${out.size} values, expected $expected" }
        return out
    }
}
