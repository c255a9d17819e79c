import Foundation

/// Port of runtime/backend.py `prefill_in_pieces`: any number of ids through an LM whose prefill has a
/// static length `piece`. StreamingCore prefills 12 prefix ids, then up to a window of kept tokens.
///
/// `runPiece(ids [piece], start)` returns logits [piece, vocab] row-major; `decode(token, pos)` returns
/// [vocab]. Full pieces run back to back; a last partial piece is right-aligned onto ids already
/// written (rewriting a slot with the same token at the same position is exact). Fewer ids than a
/// piece are zero-padded at the end (the mask hides those slots until decode overwrites them); where
/// padding would run past the cache, ids go one by one through `decode` (exact, slower).
public func prefillInPieces(_ ids: [Int64], startPos: Int, piece: Int, maxSeqLen: Int,
                            runPiece: ([Int64], Int) throws -> [Float],
                            decode: (Int64, Int) throws -> [Float]) throws -> [Float] {
    let n = ids.count
    precondition(n > 0, "prefill needs at least one id")
    func row(_ logits: [Float], _ r: Int) -> [Float] {
        let vocab = logits.count / piece
        return Array(logits[(r * vocab)..<((r + 1) * vocab)])
    }
    if n >= piece {
        var starts = Array(stride(from: 0, through: n - piece, by: piece))
        if starts[starts.count - 1] + piece < n { starts.append(n - piece) }
        var logits: [Float] = []
        for s in starts { logits = try runPiece(Array(ids[s..<(s + piece)]), startPos + s) }
        return row(logits, piece - 1)
    }
    if startPos + piece <= maxSeqLen {
        let padded = ids + [Int64](repeating: 0, count: piece - n)
        return row(try runPiece(padded, startPos), n - 1)
    }
    var out: [Float] = []
    for i in 0..<n { out = try decode(ids[i], startPos + i) }
    return out
}
