import AVFoundation

/// Plays the stream as it is generated: one AVAudioPCMBuffer per chunk on an AVAudioPlayerNode, at the
/// bundle's sample rate (mono Float32). The engine's main mixer converts to the hardware rate.
/// `schedule` is called from the generation task; the player's completion handlers run on an audio
/// thread, hence the lock around the queue depth.
final class AudioStreamer {
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
