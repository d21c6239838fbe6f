import L4LBPluginSDK

/// Which backends serve each country or continent code, and each fallback region's backends, built
/// when the pool changes (on l4lb's control thread), so that a pick reads its candidates rather than
/// scanning the whole pool: at 1,000 backends a scan of every backend for each level was most of a
/// pick.
///
/// The candidates of every code and fallback region sit in one array, each a range of it, so that a
/// pick reads them without retaining an array per level.
///
/// A pick may still run on the previous pool while the index of the next is installed. A pick from an
/// l4lb of ABI 1.3 knows its pool (`identity`) and trusts the index only for that pool; from an
/// older l4lb it uses the index only for a pool of its size, and re-checks each candidate.
final class GeoIndex: Sendable {
    /// The size of the pool it was built for.
    let count: Int
    /// The identity of the pool it was built for (`PluginBackends.identity`), as a number: compared,
    /// never read through.
    let identity: UInt?
    /// Every code's candidates, then every fallback region's, as backend indices.
    let members: [Int]
    /// Where the candidates of each code are in `members`, by `key(code)`.
    private let byCode: [UInt32: Range<Int>]
    /// Where the backends of each fallback region are in `members`, in the configuration's order.
    let byFallback: [Range<Int>]

    init(backends: PluginBackends, configuration: GeoConfiguration) {
        var servingCode: [UInt32: [Int]] = [:]
        var inFallback = [[Int]](repeating: [], count: configuration.fallback.count)
        for index in backends.indices {
            let backend = backends[index]
            guard backend.hasRegion else { continue }
            var codes: [[UInt8]] = [Array(backend.region.utf8)]
            for region in configuration.regions where backend.regionIs(region.name) {
                codes += region.codes
            }
            for code in Set(codes) {
                if let key = code.withUnsafeBytes(Self.key) { servingCode[key, default: []].append(index) }
            }
            for (position, region) in configuration.fallback.enumerated() where backend.regionIs(region) {
                inFallback[position].append(index)
            }
        }
        var members: [Int] = []
        func append(_ indices: [Int]) -> Range<Int> {
            members += indices
            return (members.count - indices.count)..<members.count
        }
        self.byCode = servingCode.mapValues(append)
        self.byFallback = inFallback.map(append)
        self.members = members
        self.count = backends.count
        self.identity = backends.identity.map { UInt(bitPattern: $0) }
    }

    /// Whether this index was built for `backends`, the very pool (so its candidates need no check).
    func isExactly(for backends: PluginBackends) -> Bool {
        guard let identity = self.identity, let other = backends.identity else { return false }
        return identity == UInt(bitPattern: other)
    }

    /// Where the backends that serve `code` are in `members`; empty when none does.
    func candidates(for code: UnsafeRawBufferPointer) -> Range<Int> {
        Self.key(code).flatMap { self.byCode[$0] } ?? 0..<0
    }

    /// A code of up to four bytes as one number (ISO country and continent codes have two), so
    /// that a pick looks it up without building an array.
    static func key(_ code: UnsafeRawBufferPointer) -> UInt32? {
        guard !code.isEmpty, code.count <= 4 else { return nil }
        // Starting from the length keeps codes of different lengths apart ("A" and "\0A").
        var key = UInt32(code.count)
        for byte in code { key = key << 8 | UInt32(byte) }
        return key
    }
}
