import Foundation
import L4LBPluginSDK
import Synchronization

/// One geo-routing instance: the configuration, the database in use (swapped when a new file
/// version appears on disk) and the pick.
///
/// Order of preference for a client: backends whose region is its country (or a configured region
/// listing that country), then its continent (likewise), then the configured fallback regions in
/// order, then any healthy backend. Among the backends of the first level that has any, the one
/// with the fewest active connections relative to its weight; ties rotate. In a level of more than
/// `exhaustiveLimit` candidates, the less loaded of two chosen at random instead (the power of two
/// choices, as Envoy's least_request does): a pick then costs the same at any pool size, and a
/// burst of new clients spreads over the region instead of piling onto one backend whose count
/// has not risen yet.
final class GeoRouter: PolicyPlugin {
    static let name = "geo"

    private let configuration: GeoConfigurationBox
    private let source: GeoDatabaseSource
    /// The candidates of each code in the pool in force (nil until l4lb tells the first pool).
    private let index = Mutex<GeoIndex?>(nil)
    private let rotation = Atomic<UInt64>(0)

    init(configuration text: String) throws(PluginError) {
        let configuration: GeoConfiguration
        do {
            configuration = try GeoConfiguration(json: text)
            self.source = try GeoDatabaseSource(path: configuration.database)
        } catch let failure as GeoConfiguration.Failure {
            throw PluginError(failure.message)
        } catch let failure as GeoDatabase.Failure {
            throw PluginError(failure.message)
        } catch {
            throw PluginError("\(error)")
        }
        self.configuration = GeoConfigurationBox(configuration)
        // The plugin's one watcher thread checks the database file for new versions.
        GeoWatcher.shared.add(self.source, interval: configuration.reloadCheckInterval)
    }

    deinit {
        // The checks stop at once (l4lb destroyed the instance after its last pick).
        GeoWatcher.shared.remove(self.source)
    }

    func poolChanged(_ backends: PluginBackends) {
        let index = GeoIndex(backends: backends, configuration: self.configuration.value)
        self.index.withLock { $0 = index }
    }

    func pick(client: PluginAddress, backends: PluginBackends) -> Int? {
        let start = self.rotation.wrappingAdd(1, ordering: .relaxed).oldValue
        return self.route(client: client, backends: backends, rotation: start, trace: nil)
    }

    /// The pick's own route, told as it goes; the rotation is read, not advanced.
    func explain(client: PluginAddress, backends: PluginBackends) -> PluginExplanation {
        var steps: [String] = []
        let backend = self.route(client: client, backends: backends, rotation: self.rotation.load(ordering: .relaxed)) {
            steps.append($0)
        }
        return PluginExplanation(steps: steps, backend: backend)
    }

    /// The one routing rule, for picks (`trace` nil: no string is built) and explanations.
    private func route(
        client: PluginAddress,
        backends: PluginBackends,
        rotation: UInt64,
        trace: ((String) -> Void)?
    ) -> Int? {
        let database = self.source.current
        // The index of this very pool is trusted as it is. Without a pool identity (an l4lb before
        // ABI 1.3), an index of this pool's size narrows the scan, and each candidate is re-checked
        // against the configuration (a pick may run on the previous pool).
        let installed = self.index.withLock { $0 }
        let exact = installed?.isExactly(for: backends) ?? false
        let index = exact ? installed : installed.flatMap { $0.count == backends.count ? $0 : nil }
        // The codes point into the database's memory: keep it alive until the matching is done.
        return withExtendedLifetime(database) { () -> Int? in
            let codes = client.withSockaddr { database.lookup($0) }
            if let trace {
                if codes.country.isEmpty, codes.continent.isEmpty {
                    trace("\(client.unmapped) is not in \(database.databaseType)")
                } else {
                    let country = codes.country.isEmpty ? "unknown" : Self.text(codes.country)
                    trace("country \(country)\(codes.registered ? " (registered)" : "")")
                    trace("continent \(codes.continent.isEmpty ? "unknown" : Self.text(codes.continent))")
                }
            }
            return (index?.members ?? []).withUnsafeBufferPointer { members -> Int? in
                /// The candidates at `range` of the index, or the whole pool (nil) without an index.
                func among(_ range: Range<Int>) -> UnsafeBufferPointer<Int>? {
                    index == nil ? nil : UnsafeBufferPointer(rebasing: members[range])
                }
                func servingRegion(of code: UnsafeRawBufferPointer, level: String) -> Int? {
                    guard !code.isEmpty else { return nil }
                    let choice = self.leastLoaded(
                        backends,
                        among: among(index?.candidates(for: code) ?? 0..<0),
                        rotation: rotation,
                        where: { exact || self.serves($0, code: code, self.configuration.value) }
                    )
                    if let trace {
                        let regions = Self.regionCounts(backends) {
                            self.serves($0, code: code, self.configuration.value)
                        }
                        trace(
                            regions.isEmpty
                                ? "no backend serves \(level) \(Self.text(code))"
                                : regions.map { "region \($0.name): \($0.healthy) healthy of \($0.all)" }.joined(
                                    separator: ", "
                                )
                        )
                        choice.map { trace(Self.chosen(backends, $0)) }
                    }
                    return choice?.backend
                }
                if let best = servingRegion(of: codes.country, level: "country")
                    ?? servingRegion(of: codes.continent, level: "continent")
                {
                    return best
                }
                // The configuration is read only off the index's path: copying it retains its arrays.
                let fallbacks = exact ? index!.byFallback.count : self.configuration.value.fallback.count
                for position in 0..<fallbacks {
                    if let choice = self.leastLoaded(
                        backends,
                        among: among(index?.byFallback[position] ?? 0..<0),
                        rotation: rotation,
                        where: { exact || $0.regionIs(self.configuration.value.fallback[position]) }
                    ) {
                        if let trace {
                            trace("fallback region \(Self.text(self.configuration.value.fallback[position]))")
                            trace(Self.chosen(backends, choice))
                        }
                        return choice.backend
                    }
                }
                guard let choice = self.leastLoaded(backends, among: nil, rotation: rotation, where: { _ in true })
                else {
                    trace?("no healthy backend of \(backends.count)")
                    return nil
                }
                if let trace {
                    trace(
                        "no region serves this client: any healthy backend, \(backends.healthyCount) of \(backends.count)"
                    )
                    trace(Self.chosen(backends, choice))
                }
                return choice.backend
            }
        }
    }

    private static func chosen(_ backends: PluginBackends, _ choice: Choice) -> String {
        let backend = backends[choice.backend]
        let region = backend.region.isEmpty ? "" : ", region \(backend.region)"
        let how = choice.drawnFrom.map { "less loaded of two drawn at random from \($0)" } ?? "least loaded"
        return "\(how): \(backend.name) (\(backend.activeConnections) open, weight \(backend.weight)\(region))"
    }

    private static func text(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    /// The regions of the backends that `matches`, with how many of each are healthy, by name.
    private static func regionCounts(
        _ backends: PluginBackends,
        where matches: (PluginBackend) -> Bool
    ) -> [(name: String, healthy: Int, all: Int)] {
        var counts: [String: (healthy: Int, all: Int)] = [:]
        for backend in backends where matches(backend) {
            counts[backend.region, default: (0, 0)].all += 1
            if backend.isHealthy { counts[backend.region, default: (0, 0)].healthy += 1 }
        }
        return counts.sorted { $0.key < $1.key }.map { ($0.key, $0.value.healthy, $0.value.all) }
    }

    private static func text(_ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    /// Whether `backend`'s region is `code` or a configured region that lists `code`.
    private func serves(
        _ backend: PluginBackend,
        code: UnsafeRawBufferPointer,
        _ configuration: GeoConfiguration
    ) -> Bool {
        guard backend.hasRegion else { return false }
        if backend.regionIs(code) { return true }
        for region in configuration.regions where backend.regionIs(region.name) {
            return region.codes.contains { $0.elementsEqual(code) }
        }
        return false
    }

    /// Above this many candidates, a pick compares two at random rather than all of them.
    static let exhaustiveLimit = 16

    /// A pick's backend, and how many candidates two were drawn from (nil: every one compared).
    struct Choice {
        var backend: Int
        var drawnFrom: Int?
    }

    /// The healthy backend that `matches` with the fewest active connections for its weight, from
    /// `candidates` (indices into `backends`) or, without them, the whole pool; ties go to the first
    /// from a start that rotates. Over more than `exhaustiveLimit` candidates, the less loaded of two
    /// usable ones drawn at random from the rotation (so an explanation, which reads the rotation,
    /// draws the same two); when draws keep finding unusable backends, every candidate.
    private func leastLoaded(
        _ backends: PluginBackends,
        among candidates: UnsafeBufferPointer<Int>?,
        rotation: UInt64,
        where matches: (PluginBackend) -> Bool
    ) -> Choice? {
        let count = candidates?.count ?? backends.count
        guard count > 0 else { return nil }
        func backendIndex(_ position: Int) -> Int { candidates.map { $0[position] } ?? position }
        func usable(_ index: Int) -> Bool {
            index < backends.count && backends[index].isHealthy && matches(backends[index])
        }
        func lessLoaded(_ index: Int, than best: Int) -> Bool {
            let backend = backends[index]
            let other = backends[best]
            return backend.activeConnections * max(other.weight, 1) < other.activeConnections * max(backend.weight, 1)
        }
        if count > Self.exhaustiveLimit {
            // Two usable backends are compared: an unusable draw is drawn again, not taken as a
            // reason to send the client to the other one whatever its load.
            var draws = RandomDraws(seed: rotation)
            var first: Int?
            for _ in 0..<Self.drawLimit {
                let index = backendIndex(draws.next(below: count))
                guard index != first, usable(index) else { continue }
                guard let drawn = first else {
                    first = index
                    continue
                }
                return Choice(backend: lessLoaded(index, than: drawn) ? index : drawn, drawnFrom: count)
            }
        }
        let start = Int(rotation % UInt64(count))
        var best: Int?
        for step in 0..<count {
            let index = backendIndex((start + step) % count)
            guard usable(index) else { continue }
            if let current = best, !lessLoaded(index, than: current) { continue }
            best = index
        }
        return best.map { Choice(backend: $0, drawnFrom: nil) }
    }

    /// Draws made for two usable backends before a pick compares every candidate (most are
    /// unhealthy or excluded).
    private static let drawLimit = 8
}

/// Numbers drawn from a seed (SplitMix64): the same seed gives the same draws, with no shared state
/// and no system call.
struct RandomDraws {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    /// A number in 0..<bound (bound > 0).
    mutating func next(below bound: Int) -> Int {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = self.state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        mixed ^= mixed >> 31
        return Int(mixed % UInt64(bound))
    }
}

/// The configuration is immutable after creation; boxed to share it with the watcher thread.
final class GeoConfigurationBox: @unchecked Sendable {
    let value: GeoConfiguration

    init(_ value: GeoConfiguration) {
        self.value = value
    }
}
