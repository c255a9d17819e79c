package ai.melodyedge.demo

import android.media.AudioAttributes
import android.media.AudioFormat
import android.media.AudioTrack
import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.launch

/**
 * Plays chunks as they are generated through one AudioTrack in streaming mode, mono at the bundle's
 * sample rate: float PCM where the device takes it, else 16-bit.
 *
 * Writes happen on their own IO thread from a queue. A blocking write returns only once most of a
 * 2.5 s chunk has played, so writing from the inference thread would stall generation by that long.
 * The queue holds at most [MAX_QUEUED_CHUNKS]: more than a 60 s run emits (24 chunks + the flush), so a
 * fixed-length run never waits; a run "until Stop" that is faster than real time waits in [submit] once
 * 80 s of audio are queued, instead of piling up audio without bound.
 */
class AudioStreamer(sampleRate: Int, scope: CoroutineScope) {
    private val float: Boolean
    private val track: AudioTrack
    private val queue = Channel<FloatArray>(MAX_QUEUED_CHUNKS)
    private val released = AtomicBoolean(false)

    init {
        val floatTrack = try {
            build(sampleRate, AudioFormat.ENCODING_PCM_FLOAT)
        } catch (e: UnsupportedOperationException) {
            null // the builder throws this for a format the device's output does not take
        }
        float = floatTrack != null
        track = floatTrack ?: build(sampleRate, AudioFormat.ENCODING_PCM_16BIT)
    }

    private val writer = scope.launch(Dispatchers.IO) {
        for (pcm in queue) write(pcm)
        track.stop() // streaming mode: the audio already written still plays out
    }

    /** Times the device ran out of audio to play: generation fell behind real time. */
    val underruns: Int get() = track.underrunCount

    val encoding: String get() = if (float) "float" else "16-bit"

    /** Blocks the generating thread while the queue is full; returns at once after [release]. */
    fun submit(pcm: FloatArray) {
        queue.trySendBlocking(pcm)
    }

    /** No more chunks: what is queued still plays. */
    fun finish() {
        queue.close()
    }

    /** Stop now and free the track (Stop button, a new generation, or the screen going away). */
    fun release() {
        if (!released.compareAndSet(false, true)) return // Stop and the end of the job may both call it
        queue.cancel()
        runCatching {
            track.pause() // wakes a blocked write
            track.flush()
        }
        writer.invokeOnCompletion { track.release() }
    }

    private fun write(chunk: FloatArray) {
        // A copy: the chunk's array also goes into the report, on another thread.
        val pcm = FloatArray(chunk.size) { chunk[it].coerceIn(-1f, 1f) }
        val pcm16 = if (float) null else ShortArray(pcm.size) { (pcm[it] * Short.MAX_VALUE).toInt().toShort() }
        fun put(offset: Int, mode: Int): Int = when (pcm16) {
            null -> track.write(pcm, offset, pcm.size - offset, mode)
            else -> track.write(pcm16, offset, pcm16.size - offset, mode)
        }
        var done = 0
        if (track.playState != AudioTrack.PLAYSTATE_PLAYING) {
            // Fill the buffer without blocking, then start: a blocking write to a track that is not
            // playing waits forever once the buffer is full. Starting after the data avoids an underrun.
            done = put(0, AudioTrack.WRITE_NON_BLOCKING).coerceAtLeast(0)
            track.play()
        }
        put(done, AudioTrack.WRITE_BLOCKING)
    }

    private fun build(rate: Int, encoding: Int): AudioTrack {
        val bytesPerSample = if (encoding == AudioFormat.ENCODING_PCM_FLOAT) 4 else 2
        val min = AudioTrack.getMinBufferSize(rate, AudioFormat.CHANNEL_OUT_MONO, encoding)
        return AudioTrack.Builder()
            .setAudioAttributes(
                AudioAttributes.Builder()
                    .setUsage(AudioAttributes.USAGE_MEDIA)
                    .setContentType(AudioAttributes.CONTENT_TYPE_MUSIC)
                    .build(),
            )
            .setAudioFormat(
                AudioFormat.Builder()
                    .setEncoding(encoding)
                    .setSampleRate(rate)
                    .setChannelMask(AudioFormat.CHANNEL_OUT_MONO)
                    .build(),
            )
            .setTransferMode(AudioTrack.MODE_STREAM)
            // Half a second of headroom: the queue holds the rest, so the buffer need not hold a chunk.
            .setBufferSizeInBytes(maxOf(min, rate * bytesPerSample / 2))
            .build()
    }
}

/** 32 chunks of 2.5 s: 80 s of audio, about 8 MB of float PCM at 24 kHz. */
const val MAX_QUEUED_CHUNKS = 32
