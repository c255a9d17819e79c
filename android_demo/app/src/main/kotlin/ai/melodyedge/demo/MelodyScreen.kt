package ai.melodyedge.demo

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.safeDrawingPadding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.selection.selectable
import androidx.compose.material3.Button
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.RadioButton
import androidx.compose.material3.Slider
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.text.font.FontWeight
import androidx.compose.ui.unit.dp
import java.util.Locale

/** One scrolling column: bundle, preset, length, Generate/Stop, the figures, then one line per chunk. */
@Composable
fun MelodyScreen(
    state: UiState,
    onRefresh: () -> Unit,
    onSelectBundle: (String) -> Unit,
    onSelectPreset: (Int) -> Unit,
    onSeconds: (Float) -> Unit,
    onUntilStop: (Boolean) -> Unit,
    onGenerate: () -> Unit,
    onStop: () -> Unit,
    onCopyReport: (String) -> Unit,
) {
    LazyColumn(
        // targetSdk 35+ draws edge to edge: keep clear of the status and navigation bars.
        modifier = Modifier.fillMaxWidth().safeDrawingPadding().padding(16.dp),
        verticalArrangement = Arrangement.spacedBy(8.dp),
    ) {
        item { Text("MeLoDy edge", style = MaterialTheme.typography.headlineSmall) }

        item { Heading("Bundle") }
        if (state.bundles.isEmpty()) {
            item {
                Text("No bundle found. Push one (see README) into a folder of:\n" + state.roots.joinToString("\n"))
            }
        }
        items(state.bundles) { b ->
            Choice(b.name, selected = b.path == state.selected, enabled = !state.running) { onSelectBundle(b.path) }
        }
        item { OutlinedButton(onClick = onRefresh, enabled = !state.running) { Text("Rescan folders") } }
        state.bundleInfo?.let { info -> item { Text(info, style = MaterialTheme.typography.bodySmall) } }

        if (state.presets.isNotEmpty()) {
            item { Heading("Preset") }
            items(state.presets.size) { i ->
                Choice(state.presets[i], selected = i == state.preset, enabled = !state.running) { onSelectPreset(i) }
            }
            item {
                Column {
                    Text(if (state.untilStop) "Length: until Stop" else "Length: ${state.seconds.toInt()} s")
                    Slider(
                        value = state.seconds,
                        onValueChange = onSeconds,
                        valueRange = 5f..60f,
                        steps = 10, // 5 s apart
                        enabled = !state.running && !state.untilStop,
                    )
                    Row(verticalAlignment = Alignment.CenterVertically) {
                        Switch(checked = state.untilStop, onCheckedChange = onUntilStop, enabled = !state.running)
                        Text("until Stop", modifier = Modifier.padding(start = 8.dp))
                    }
                }
            }
        }

        item {
            Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                Button(onClick = onGenerate, enabled = !state.running && state.presets.isNotEmpty()) {
                    Text("Generate")
                }
                OutlinedButton(onClick = onStop, enabled = state.running) { Text("Stop") }
                OutlinedButton(onClick = { state.report?.let(onCopyReport) }, enabled = state.report != null) {
                    Text("Copy report")
                }
            }
        }
        if (state.status.isNotEmpty()) item { Text(state.status) }
        state.error?.let { e -> item { Text(e, color = MaterialTheme.colorScheme.error) } }

        state.figures?.let { f ->
            item { Heading("Figures") }
            item { FigureTable(f, state.loadSeconds) }
            item { Heading("Chunks") }
            item { Mono("  #  latency    LM   DPD   VAE  tok  audio") }
            items(f.chunks) { c ->
                Mono(
                    String.format(
                        Locale.US, "%3d  %6.2fs %5.2f %5.2f %5.2f %4d %5.2fs",
                        c.index, c.latencyS, c.lmS, c.dpdS, c.vaeS, c.tokens, c.audioS,
                    ),
                )
            }
        }
    }
}

@Composable
private fun FigureTable(f: Figures, loadSeconds: Double?) {
    Column {
        Figure("time to first audio", f.timeToFirstAudioS?.let { "%.2f s".fmt(it) } ?: "…")
        Figure("real-time factor", f.realTimeFactor?.let { "%.2f (below 1 keeps up)".fmt(it) } ?: "…")
        Figure("chunk latency p50 / p95", if (f.chunkP50S == null) "…" else "%.2f / %.2f s".fmt(f.chunkP50S, f.chunkP95S))
        Figure("audio / wall", "%.1f s / %.1f s".fmt(f.audioS, f.wallS))
        Figure("RSS now / peak", "%.0f / %.0f MB".fmt(f.lastRssMb ?: 0.0, f.peakRssMb))
        Figure("native heap", "%.0f MB".fmt(f.nativeHeapMb))
        Figure("playback underruns", f.underruns.toString())
        loadSeconds?.let { Figure("program load", "%.2f s".fmt(it)) }
    }
}

@Composable
private fun Heading(text: String) {
    Column { // one child per lazy item: several would be stacked on top of each other
        HorizontalDivider()
        Text(text, fontWeight = FontWeight.Bold)
    }
}

@Composable
private fun Choice(label: String, selected: Boolean, enabled: Boolean, onClick: () -> Unit) {
    Row(
        modifier = Modifier.fillMaxWidth().selectable(selected = selected, enabled = enabled, onClick = onClick),
        verticalAlignment = Alignment.CenterVertically,
    ) {
        RadioButton(selected = selected, onClick = null, enabled = enabled) // the whole row is the target
        Text(label)
    }
}

@Composable
private fun Figure(name: String, value: String) {
    Row(modifier = Modifier.fillMaxWidth(), horizontalArrangement = Arrangement.SpaceBetween) {
        Text(name)
        Text(value, fontFamily = FontFamily.Monospace)
    }
}

@Composable
private fun Mono(text: String) = Text(text, fontFamily = FontFamily.Monospace, style = MaterialTheme.typography.bodySmall)

private fun String.fmt(vararg args: Any?): String = String.format(Locale.US, this, *args)
