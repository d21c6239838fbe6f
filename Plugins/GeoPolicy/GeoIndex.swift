import L4LBPluginSDK

/// Which backends serve each country or continent code, and each fallback region's backends, built
/// when the pool changes (on l4lb's control thread), so that a pick scans its candidates rather than
/// the whole pool: at 1,000 backends a scan of every backend for each level was most of a pick.
///
/// A pick may still run on the previous pool while the index of the next is installed: the pick
/// re-checks each candidate against the rule, and uses the index only for a pool of its size.
final class GeoIndex: Sendable {
    /// The size of the pool it was built for.
    let count: Int
    /// Backends whose region is the code, or a configured region that lists it, by `key(code)`.
    private let byCode: [UInt32: [Int]]
    /// The backends of each fallback region, in the configuration's order.
    let byFallback: [[Int]]

    init(backends: PluginBackends, configuration: GeoConfiguration) {
        var byCode: [UInt32: [Int]] = [:]
        var byFallback = [[Int]](repeating: [], count: configuration.fallback.count)
        for index in backends.indices {
            let backend = backends[index]
            guard backend.hasRegion else { continue }
            var codes: [[UInt8]] = [Array(backend.region.utf8)]
            for region in configuration.regions where backend.regionIs(region.name) {
                codes += region.codes
            }
            for code in Set(codes) {
                if let key = code.withUnsafeBytes(Self.key) { byCode[key, default: []].append(index) }
            }
            for (position, region) in configuration.fallback.enumerated() where backend.regionIs(region) {
                byFallback[position].append(index)
            }
        }
        self.count = backends.count
        self.byCode = byCode
        self.byFallback = byFallback
    }

    /// The backends that serve `code`; empty when none does.
    func candidates(for code: UnsafeRawBufferPointer) -> [Int] {
        Self.key(code).flatMap { self.byCode[$0] } ?? []
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
