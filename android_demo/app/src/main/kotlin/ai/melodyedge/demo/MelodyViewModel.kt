package ai.melodyedge.demo

import ai.melodyedge.core.BundleException
import ai.melodyedge.core.CountingRunner
import ai.melodyedge.core.GenerationSettings
import ai.melodyedge.core.LatencyReport
import ai.melodyedge.core.StreamingCore
import ai.melodyedge.core.parseJson
import android.app.Application
import android.os.Build
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock

/** `melody-edge bench`'s default seed, so a phone run and a host run generate the same tokens. */
const val SEED = 0L

/**
 * "Until Stop": the core slides its window forever, but its settings need a finite length, so ask for
 * 24 h. Memory stays bounded: the window is fixed, the report keeps the last MAX_REPORT_CHUNKS chunks and
 * the audio queue waits when full (AudioStreamer).
 */
const val UNTIL_STOP_SECONDS = 24 * 60 * 60.0

data class BundleEntry(val path: String, val name: String)

data class UiState(
    val roots: List<String> = emptyList(),
    val bundles: List<BundleEntry> = emptyList(),
    val selected: String? = null,
    val bundleInfo: String? = null,
    val presets: List<String> = emptyList(),
    val preset: Int = 0,
    val seconds: Float = 20f,
    val untilStop: Boolean = false,
    val running: Boolean = false,
    val status: String = "",
    val error: String? = null,
    val loadSeconds: Double? = null,
    val figures: Figures? = null,
    val report: String? = null,
)

/**
 * Owns the bundle, the ExecuTorch runner and the audio track. Inference runs on Dispatchers.Default,
 * one job at a time under [lock]; the UI only reads [state].
 */
class MelodyViewModel(app: Application) : AndroidViewModel(app) {
    private val _state = MutableStateFlow(UiState())
    val state: StateFlow<UiState> = _state.asStateFlow()

    // Internal storage (adb run-as) and app-specific external storage (plain adb push).
    private val roots = listOfNotNull(File(app.filesDir, "bundles"), app.getExternalFilesDir(null)?.let { File(it, "bundles") })
    private val lock = Mutex()
    private val stop = AtomicBoolean(false)
    private var bundle: CheckedBundle? = null
    private var runner: ExecuTorchRunner? = null
    private var audio: AudioStreamer? = null
    private var job: Job? = null

    @Volatile private var cleared = false

    init {
        refresh()
    }

    fun refresh() {
        viewModelScope.launch(Dispatchers.IO) {
            roots.forEach { it.mkdirs() } // so there is a folder to push into
            val dirs = Bundles.list(roots)
            _state.update { s -> s.copy(roots = roots.map { it.path }, bundles = dirs.map { BundleEntry(it.path, it.name) }) }
            if (_state.value.selected == null) dirs.firstOrNull()?.let { select(it.path) }
        }
    }

    fun select(path: String) {
        if (_state.value.running) return
        _state.update {
            it.copy(selected = path, error = null, status = "checking ${File(path).name}…", presets = emptyList(), bundleInfo = null)
        }
        viewModelScope.launch(Dispatchers.Default) {
            lock.withLock {
                closeRunner()
                bundle = null
                try {
                    val b = Bundles.open(File(path))
                    bundle = b
                    _state.update { s ->
                        s.copy(
                            presets = b.manifest.presets.map { "${it.name}: ${it.prompt}" },
                            preset = 0,
                            bundleInfo = describe(b),
                            status = "ready",
                        )
                    }
                } catch (e: Exception) {
                    _state.update { it.copy(error = message(e), status = "") }
                }
            }
        }
    }

    fun selectPreset(index: Int) = _state.update { it.copy(preset = index) }

    fun setSeconds(seconds: Float) = _state.update { it.copy(seconds = seconds) }

    fun setUntilStop(on: Boolean) = _state.update { it.copy(untilStop = on) }

    fun generate() {
        val s = _state.value
        if (s.running) return
        stop.set(false)
        _state.update { it.copy(running = true, error = null, report = null, figures = null, status = "loading programs…") }
        job = viewModelScope.launch(Dispatchers.Default) {
            lock.withLock {
                try {
                    stream(s.preset, if (s.untilStop) null else s.seconds.toDouble())
                } catch (e: CancellationException) {
                    throw e
                } catch (e: Exception) {
                    _state.update { it.copy(error = message(e), status = "failed") }
                } catch (e: LinkageError) { // libexecutorch.so missing for this ABI, or it failed to load
                    _state.update { it.copy(error = message(e), status = "failed") }
                } finally {
                    _state.update { it.copy(running = false) }
                    if (cleared) closeRunner()
                }
            }
        }
    }

    /** Silences the audio now; generation ends when the chunk in progress is done (the core checks per chunk). */
    fun stop() {
        stop.set(true)
        audio?.release()
        _state.update { it.copy(status = "stopping after this chunk…") }
    }

    /** [seconds] null: until Stop. */
    private fun stream(presetIndex: Int, seconds: Double?) {
        val b = bundle ?: throw BundleException("no usable bundle selected")
        val preset = b.manifest.presets.getOrNull(presetIndex)
            ?: throw BundleException("${b.dir}: the manifest has no presets; export with --presets FILE.json")
        val t0 = System.nanoTime()
        val r = runner ?: ExecuTorchRunner(b.dir, b.manifest).also {
            runner = it
            _state.update { s -> s.copy(loadSeconds = (System.nanoTime() - t0) / 1e9, bundleInfo = describe(b) + "\n" + backends(it)) }
        }
        val spec = b.manifest.spec
        val settings = GenerationSettings(seconds ?: UNTIL_STOP_SECONDS, b.manifest.steps, b.manifest.guidanceScale, b.temperature, b.topK, SEED)
        val counting = CountingRunner(r)
        // The unrolled sampler where the bundle has it and its export measured it as the faster form.
        val core = StreamingCore(counting, spec, if (r.hasUnrolledSampler) b.manifest.unrolledSamplerSteps else 0)
        audio?.release()
        val player = AudioStreamer(spec.sampleRate, viewModelScope).also { audio = it }
        val length = if (seconds == null) "until Stop" else "${seconds.toInt()} s"
        _state.update { it.copy(status = "generating ${preset.name}, $length (${player.encoding} PCM)…") }
        // Created last: its clock starts here, so the time to first audio excludes loading the programs.
        val report = LatencyReport(b.runName, "executorch", b.modelName, settings.steps, spec, Memory::rssMb)
        core.stream(preset.tokens, settings) { chunk ->
            report.onChunk(chunk) // the chunk's time: its audio is handed to the track right after
            player.submit(chunk.audio)
            publish(report, counting, b, player)
            !stop.get()
        }
        val stopped = stop.get()
        if (stopped) player.release() else player.finish()
        val json = publish(report, counting, b, player)
        _state.update { it.copy(report = json, status = if (stopped) "stopped" else "done; the last chunk is still playing") }
    }

    /** Figures on screen are read back from the report itself, so both always say the same. */
    private fun publish(report: LatencyReport, counting: CountingRunner, b: CheckedBundle, player: AudioStreamer): String {
        val json = report.toJson(counting.counts, machine(), created(), b.bytes)
        val figures = Figures.from(json, player.underruns, Memory.nativeHeapMb())
        _state.update { it.copy(figures = figures) }
        return json
    }

    override fun onCleared() {
        cleared = true
        stop.set(true)
        audio?.release()
        // A method may be running: then the job's finally frees the programs once the chunk ends.
        if (job?.isActive != true) closeRunner()
    }

    private fun closeRunner() {
        runner?.close()
        runner = null
    }

    private fun describe(b: CheckedBundle): String {
        val spec = b.manifest.spec
        val mb = "%.1f".format(Locale.US, b.bytes / 1e6)
        // The LM's guidance is baked into lm.pte (two cache rows); shown so a slower LM is not a surprise.
        val lmCfg = b.manifest.lmGuidanceScale.let { if (it != 1.0) " · LM cfg ${"%g".format(Locale.US, it)}" else "" }
        return "${b.runName} · model ${b.modelName} · ${spec.sampleRate} Hz · T=${b.manifest.steps}$lmCfg · $mb MB"
    }

    // A method with no delegate runs on ExecuTorch's portable CPU kernels.
    private fun backends(r: ExecuTorchRunner): String =
        r.backends.entries.joinToString(" · ") { (m, list) -> "$m: ${list.ifEmpty { listOf("portable") }.joinToString("+")}" }

    private fun message(e: Throwable): String = when (e) {
        is BundleException -> e.message ?: "bad bundle"
        is LinkageError ->
            "ExecuTorch's native library did not load on this device (ABIs ${Build.SUPPORTED_ABIS.joinToString()}): ${e.message}"
        else -> "${e.javaClass.simpleName}: ${e.message}"
    }

    /** The `machine` block of the report (runtime/bench.schema.json requires platform and cpu_count). */
    private fun machine(): Map<String, Any?> = linkedMapOf(
        "platform" to "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})",
        "processor" to (if (Build.VERSION.SDK_INT >= 31) Build.SOC_MODEL else Build.HARDWARE),
        "cpu_count" to Runtime.getRuntime().availableProcessors(),
        "device" to "${Build.MANUFACTURER} ${Build.MODEL}",
        "abi" to Build.SUPPORTED_ABIS.firstOrNull(),
        "runtime" to "org.pytorch:executorch-android:$EXECUTORCH_VERSION",
    )

    // The format runtime/bench.py writes ("created").
    private fun created(): String = SimpleDateFormat("yyyy-MM-dd HH:mm:ss", Locale.US).format(Date())
}

data class ChunkFigure(
    val index: Int,
    val latencyS: Double,
    val lmS: Double,
    val dpdS: Double,
    val vaeS: Double,
    val tokens: Int,
    val audioS: Double,
)

/** What the screen shows, taken from the LatencyReport JSON (fields as in runtime/bench.schema.json). */
data class Figures(
    val timeToFirstAudioS: Double?,
    val realTimeFactor: Double?,
    val chunkP50S: Double?,
    val chunkP95S: Double?,
    val audioS: Double,
    val wallS: Double,
    val peakRssMb: Double,
    val lastRssMb: Double?,
    val nativeHeapMb: Double,
    val underruns: Int,
    val chunks: List<ChunkFigure>,
) {
    companion object {
        fun from(json: String, underruns: Int, nativeHeapMb: Double): Figures {
            val run = (((parseJson(json) as Map<*, *>)["runs"] as List<*>)[0]) as Map<*, *>
            fun num(m: Map<*, *>, k: String): Double? = (m[k] as? Number)?.toDouble()
            val chunks = (run["chunks"] as List<*>).map { it as Map<*, *> }
            return Figures(
                timeToFirstAudioS = num(run, "time_to_first_audio_s"),
                realTimeFactor = num(run, "real_time_factor"),
                chunkP50S = num(run, "chunk_latency_p50_s"),
                chunkP95S = num(run, "chunk_latency_p95_s"),
                audioS = num(run, "seconds") ?: 0.0,
                wallS = num(run, "wall_s") ?: 0.0,
                peakRssMb = num(run, "peak_rss_mb") ?: 0.0,
                lastRssMb = chunks.lastOrNull()?.let { num(it, "rss_mb") },
                nativeHeapMb = nativeHeapMb,
                underruns = underruns,
                chunks = chunks.map { c ->
                    ChunkFigure(
                        (c["index"] as Number).toInt(), num(c, "latency_s") ?: 0.0, num(c, "lm_s") ?: 0.0,
                        num(c, "dpd_s") ?: 0.0, num(c, "vae_s") ?: 0.0, (c["tokens"] as Number).toInt(), num(c, "audio_s") ?: 0.0,
                    )
                },
            )
        }
    }
}
