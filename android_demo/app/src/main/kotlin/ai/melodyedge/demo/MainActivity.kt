package ai.melodyedge.demo

import android.content.ClipData
import android.content.ClipboardManager
import android.os.Bundle
import android.widget.Toast
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Surface
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.lifecycle.ViewModelProvider

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        // Survives rotation: a generation in progress keeps running in the ViewModel.
        val vm = ViewModelProvider(this)[MelodyViewModel::class.java]
        setContent {
            MaterialTheme {
                Surface {
                    val state by vm.state.collectAsState()
                    MelodyScreen(
                        state = state,
                        onRefresh = vm::refresh,
                        onSelectBundle = vm::select,
                        onSelectPreset = vm::selectPreset,
                        onSeconds = vm::setSeconds,
                        onUntilStop = vm::setUntilStop,
                        onGenerate = vm::generate,
                        onStop = vm::stop,
                        onCopyReport = { copy(it) },
                    )
                }
            }
        }
    }

    private fun copy(json: String) {
        val clipboard = getSystemService(ClipboardManager::class.java)
        clipboard.setPrimaryClip(ClipData.newPlainText("melody-edge latency report", json))
        Toast.makeText(this, "Report copied (${json.length} characters)", Toast.LENGTH_SHORT).show()
    }
}
