import AVFoundation

/// Plays the stream as it is generated: one AVAudioPCMBuffer per chunk on an AVAudioPlayerNode, at the
/// bundle's sample rate (mono Float32). The engine's main mixer converts to the hardware rate.
/// `schedule` is called from the generation task; the player's completion handlers run on an audio
/// thread, hence the lock around the queue depth.
/// At most `maxQueued` buffers wait to play: more than a 120 s run emits (48 chunks + the flush), so a
/// fixed-length run never waits; a run "until Stop" that is faster than real time waits in `schedule`
/// once 160 s of audio are queued, instead of piling up audio without bound.
final class AudioStreamer {
    /// 64 chunks of 2.5 s: 160 s of audio, about 15 MB of Float32 at 24 kHz.
    static let maxQueued = 64
    private let engine = AVAudioEngine()
    private let player = AVAudioPlayerNode()
    private let format: AVAudioFormat
    private let lock = NSLock()
    private var queued = 0
    private var started = false
    private var gaps = 0
    private var stopped = false

    /// Chunks that arrived after the previous one had finished playing: audible gaps.
    var underruns: Int {
        lock.lock()
        defer { lock.unlock() }
        return gaps
    }

    init(sampleRate: Int) throws {
        guard let format = AVAudioFormat(standardFormatWithSampleRate: Double(sampleRate), channels: 1) else {
            throw StreamerError("cannot make a \(sampleRate) Hz mono format")
        }
        self.format = format
        try AVAudioSession.sharedInstance().setCategory(.playback, mode: .default)
        try AVAudioSession.sharedInstance().setActive(true)
        engine.attach(player)
        engine.connect(player, to: engine.mainMixerNode, format: format)
        try engine.start()
    }

    func schedule(_ samples: [Float]) {
        guard !samples.isEmpty,
              let buffer = AVAudioPCMBuffer(pcmFormat: format, frameCapacity: AVAudioFrameCount(samples.count)),
              let channel = buffer.floatChannelData?[0] else { return }
        buffer.frameLength = AVAudioFrameCount(samples.count)
        samples.withUnsafeBufferPointer { channel.update(from: $0.baseAddress!, count: samples.count) }
        // Back-pressure: while `maxQueued` buffers wait to play, poll (a chunk lasts seconds); Stop ends the wait.
        while true {
            lock.lock()
            let full = queued >= AudioStreamer.maxQueued && !stopped
            lock.unlock()
            if !full { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        lock.lock()
        let skip = stopped  // Stop was pressed while this chunk was being generated
        if !skip {
            if started && queued == 0 { gaps += 1 }
            queued += 1
        }
        lock.unlock()  // before scheduling: a stopping player may call the handler on this thread
        if skip { return }
        player.scheduleBuffer(buffer) { [weak self] in
            guard let self else { return }
            self.lock.lock()
            self.queued -= 1
            self.lock.unlock()
        }
        if !started {
            player.play()
            started = true
        }
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        player.stop()
        engine.stop()
        try? AVAudioSession.sharedInstance().setActive(false)
    }
}

struct StreamerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
