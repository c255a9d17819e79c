package ai.melodyedge.core

import java.io.File
import kotlin.system.exitProcess

/**
 * Plain-JVM checks of the core against the Python runtime (no JUnit: kotlinc alone builds and runs this).
 *
 * Usage: CoreTestsKt VECTORS.json TRACE.bin
 *  - VECTORS.json: PortableRng outputs, sampleToken cases, angle schedules, chunk token ranges,
 *    computed by the Python runtime (tests/apps/test_kotlin_core.py writes it).
 *  - TRACE.bin: a streamed generation recorded by runtime/trace.py; replayed through StreamingCore.
 */
private var failures = 0

private fun check(cond: Boolean, msg: () -> String) {
    if (!cond) {
        failures++
        System.err.println("FAIL: ${msg()}")
    }
}

@Suppress("UNCHECKED_CAST")
fun rngAndSampling(vectors: Map<String, Any?>) {
    for (case in vectors["rng"] as List<Map<String, Any?>>) {
        val rng = PortableRng((case["seed"] as Number).toLong(), (case["stream"] as Number).toLong())
        val u = (case["uniform"] as List<Number>).map { it.toDouble() }
        for ((i, want) in u.withIndex()) {
            val got = rng.uniform()
            check(got == want) { "rng ${case["seed"]}/${case["stream"]} uniform[$i] = $got, python $want" }
        }
        val normals = (case["normal"] as List<Number>).map { it.toFloat() }
        val got = rng.normal(normals.size)
        for (i in normals.indices) check(got[i] == normals[i]) { "rng normal[$i] = ${got[i]}, python ${normals[i]}" }
    }
    for (case in vectors["sampling"] as List<Map<String, Any?>>) {
        val logits = (case["logits"] as List<Number>).map { it.toFloat() }.toFloatArray()
        val got = sampleToken(logits, (case["temperature"] as Number).toDouble(), (case["top_k"] as Number).toInt(), (case["u"] as Number).toDouble())
        check(got == (case["token"] as Number).toInt()) { "sampleToken $case -> $got" }
    }
    for (case in vectors["schedules"] as List<Map<String, Any?>>) {
        val steps = (case["steps"] as Number).toInt()
        val want = (case["angles"] as List<Number>).map { it.toDouble() }
        val got = angleSchedule(steps)
        for (i in want.indices) check(got[i] == want[i]) { "angleSchedule($steps)[$i] = ${got[i]}, python ${want[i]}" }
    }
}

/** A real exported bundle's manifest parses into the trace's StreamSpec; a newer schema is refused clearly. */
@Suppress("UNCHECKED_CAST")
fun manifestChecks(bundle: File, spec: StreamSpec) {
    val m = Manifest.load(bundle)
    check(m.spec == spec) { "manifest spec ${m.spec} differs from the trace's $spec" }
    check(m.presets.isNotEmpty() && m.presets.all { it.tokens.size == spec.prefixLevels }) { "presets: ${m.presets}" }
    val raw = parseJson(File(bundle, BundleContract.MANIFEST_FILE).readText()) as MutableMap<String, Any?>
    val lmCfg = ((raw["sampler"] as Map<String, Any?>)["lm_guidance_scale"] as? Number)?.toDouble() ?: 1.0
    check(m.lmGuidanceScale == lmCfg) { "lm guidance ${m.lmGuidanceScale}, manifest $lmCfg" }
    println("lm guidance $lmCfg")
    raw["schema_version"] = (BundleContract.SCHEMA_VERSION + 1).toLong()
    val msg = try {
        Manifest.parse(raw); null
    } catch (e: BundleException) {
        e.message
    }
    check(msg != null && "newer than this app" in msg) { "a newer schema was not refused: $msg" }
    check(runCatching { Manifest.load(File(bundle, "missing")) }.exceptionOrNull()?.message?.contains("not found") == true) {
        "a missing manifest was not reported"
    }
}

/** A long run ("until Stop") keeps only the last maxChunks entries; the totals still cover every chunk. */
@Suppress("UNCHECKED_CAST")
fun reportCap(spec: StreamSpec) {
    var now = 0.0
    val report = LatencyReport("cap", "test", "m", 2, spec, { 1.0 }, { now }, maxChunks = 3)
    for (g in 0 until 5) {
        now += 1.0
        val tokens = IntArray(if (g == 4) 0 else 62) // the last one is a flush
        report.onChunk(AudioChunk(g, FloatArray(24000), 24000L * g, tokens, 0.5, 0.25, 0.125))
    }
    val root = parseJson(report.toJson(mapOf("dpd" to 8), mapOf("platform" to "p", "cpu_count" to 1), "c", null)) as Map<String, Any?>
    val run = (root["runs"] as List<Map<String, Any?>>)[0]
    val indices = (run["chunks"] as List<Map<String, Any?>>).map { (it["index"] as Number).toInt() }
    check(indices == listOf(2, 3, 4)) { "capped report keeps chunks $indices, expected [2, 3, 4]" }
    check((run["seconds"] as Number).toDouble() == 5.0 * 24000 / spec.sampleRate) { "capped report seconds ${run["seconds"]}" }
    check((run["lm_tokens_per_s"] as Number).toDouble() == 4 * 62 / 2.0) { "capped report tokens/s ${run["lm_tokens_per_s"]}" }
    check((run["dpd_step_s"] as Number).toDouble() == 1.0 / 8) { "capped report dpd_step_s ${run["dpd_step_s"]}" }
}

fun main(args: Array<String>) {
    if (args.size !in 2..3) {
        System.err.println("usage: CoreTestsKt VECTORS.json TRACE.bin [BUNDLE_DIR]")
        exitProcess(2)
    }
    @Suppress("UNCHECKED_CAST")
    rngAndSampling(parseJson(File(args[0]).readText()) as Map<String, Any?>)

    val trace = Trace.read(File(args[1]))
    reportCap(trace.spec)
    val runner = ReplayRunner(trace)
    val counting = CountingRunner(runner)
    // The app's choice of sampler form comes from the bundle's manifest, as in MelodyViewModel.
    val unrolled = if (trace.samplerArtifact && args.size == 3) Manifest.load(File(args[2])).unrolledSamplerSteps else 0
    val core = StreamingCore(counting, trace.spec, unrolled)
    val report = LatencyReport("replay", "trace", "tiny", trace.settings.steps, trace.spec, { Runtime.getRuntime().totalMemory() / 1e6 })
    var samples = 0L
    var chunks = 0
    try {
        core.stream(trace.prefixCodes, trace.settings) { chunk ->
            check(chunk.startSample == samples) { "chunk ${chunk.index} starts at ${chunk.startSample}, expected $samples" }
            samples += chunk.audio.size
            chunks++
            report.onChunk(chunk)
            true
        }
        check(runner.done) { "the core stopped before the trace ended" }
    } catch (e: TraceMismatch) {
        check(false) { "trace replay: ${e.message}" }
    }
    if (args.size == 3) manifestChecks(File(args[2]), trace.spec)
    val machine = mapOf("platform" to System.getProperty("os.name"), "cpu_count" to Runtime.getRuntime().availableProcessors())
    File(args[1] + ".report.json").writeText(report.toJson(counting.counts, machine, "replay", null))
    val want = Math.round(trace.settings.seconds * trace.spec.sampleRate)
    check(samples == want) { "streamed $samples samples, expected $want" }
    println("replayed ${trace.records.size} calls, $chunks chunks, $samples samples, max float error ${runner.maxFloatError}")
    println("sampler calls: ${counting.counts["dpd_sampler"]} unrolled, ${counting.counts["dpd"]} dpd passes")
    if (failures > 0) {
        System.err.println("$failures check(s) failed")
        exitProcess(1)
    }
    println("OK")
}
