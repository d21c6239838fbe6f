/// A seeded mutation fuzzer for the parsers that take outside bytes: each case starts from a
/// corpus input and applies a few random edits (flip, insert, delete, duplicate a slice, splice in
/// a token that parsers trip on). Deterministic: a failing case names its seed and iteration, and is
/// then added to the corpus as a regression test.
public struct Mutator {
    private var random: SplitMix64

    public init(seed: UInt64) { self.random = SplitMix64(seed: seed) }

    public mutating func next() -> UInt64 { self.random.next() }

    public mutating func below(_ bound: Int) -> Int { Int(self.next() % UInt64(max(bound, 1))) }

    /// Tokens that sit on parsers' edges: separators, signs, huge numbers, control characters,
    /// UTF-8 that is not ASCII, JSON structure.
    static let tokens: [[UInt8]] = [
        ":", "[", "]", "{", "}", "\"", ",", "=", " ", "\r\n", "\n", "\0", "+", "-", "0", "65535", "65536",
        "99999999999999999999", "-1", "1e309", "weight=", "region=", "\u{1b}", "é", "\u{FEFF}", "\\", "null",
        "PROXY ", "TCP4", "TCP6", "UNKNOWN", "::", "::ffff:", "255.255.255.255",
    ].map { Array($0.utf8) }

    public mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0..<(1 + self.below(4)) {
            switch self.below(6) {
            case 0 where !bytes.isEmpty:
                bytes[self.below(bytes.count)] ^= UInt8(truncatingIfNeeded: 1 << self.below(8))
            case 1:
                bytes.insert(UInt8(truncatingIfNeeded: self.next()), at: self.below(bytes.count + 1))
            case 2 where !bytes.isEmpty:
                bytes.remove(at: self.below(bytes.count))
            case 3 where !bytes.isEmpty:
                let start = self.below(bytes.count)
                let end = min(bytes.count, start + 1 + self.below(16))
                bytes.insert(contentsOf: bytes[start..<end], at: self.below(bytes.count + 1))
            case 4:
                bytes.insert(contentsOf: Self.tokens[self.below(Self.tokens.count)], at: self.below(bytes.count + 1))
            default:
                bytes = Array(bytes.prefix(self.below(bytes.count + 1)))
            }
        }
        return bytes
    }
}

extension Mutator {
    /// Runs `body` on each corpus input as is, then on `iterations` mutations of them.
    public static func fuzz(_ corpus: [String], seed: UInt64, iterations: Int, _ body: ([UInt8]) -> Void) {
        var mutator = Mutator(seed: seed)
        let seeds = corpus.map { Array($0.utf8) }
        for input in seeds { body(input) }
        for _ in 0..<iterations {
            body(mutator.mutate(seeds[mutator.below(seeds.count)]))
        }
    }
}
