import Foundation
import L4LBPluginSDK
import Synchronization

/// One geo-routing instance: the configuration, the database in use (swapped when a new file
/// version appears on disk) and the pick.
///
/// Order of preference for a client: backends whose region is its country (or a configured region
/// listing that country), then its continent (likewise), then the configured fallback regions in
/// order, then any healthy backend. Among the backends of the first level that has any, the one
/// with the fewest active connections relative to its weight; ties rotate.
final class GeoRouter: PolicyPlugin {
    static let name = "geo"

    private let configuration: GeoConfigurationBox
    private let database: Mutex<GeoDatabase>
    /// The candidates of each code in the pool in force (nil until l4lb tells the first pool).
    private let index = Mutex<GeoIndex?>(nil)
    private let rotation = Atomic<UInt64>(0)
    /// The last file version refused, so that a broken file is reported once, not on every check.
    private let refusedVersion = Mutex<GeoDatabase.FileVersion?>(nil)

    init(configuration text: String) throws(PluginError) {
        let configuration: GeoConfiguration
        do {
            configuration = try GeoConfiguration(json: text)
            self.database = Mutex(try GeoDatabase(path: configuration.database))
        } catch let failure as GeoConfiguration.Failure {
            throw PluginError(failure.message)
        } catch let failure as GeoDatabase.Failure {
            throw PluginError(failure.message)
        } catch {
            throw PluginError("\(error)")
        }
        self.configuration = GeoConfigurationBox(configuration)
        // The plugin's one watcher thread checks the database file for new versions.
        GeoWatcher.shared.add(self, interval: configuration.reloadCheckInterval)
    }

    deinit {
        // The checks stop at once (l4lb destroyed the instance after its last pick).
        GeoWatcher.shared.remove(self)
    }

    /// Opens the new version of the file, if there is one; a broken new file is refused with a line
    /// in l4lb's log and the database in use stays.
    func reloadIfChanged() {
        let current = self.database.withLock { $0 }
        let path = self.configuration.value.database
        guard let version = GeoDatabase.FileVersion(path: path), version != current.version,
            self.refusedVersion.withLock({ $0 }) != version
        else { return }
        do {
            let fresh = try GeoDatabase(path: path)
            self.database.withLock { $0 = fresh }
            PluginLog.info("reloaded \(path) (\(fresh.databaseType))")
        } catch {
            self.refusedVersion.withLock { $0 = version }
            PluginLog.warning("refused the new version of \(path): \(error.message); keeping the one in use")
        }
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
        let database = self.database.withLock { $0 }
        let configuration = self.configuration.value
        let start = Int(rotation % UInt64(max(backends.count, 1)))
        // Only an index of this pool's size narrows the scan (a pick may run on the previous pool).
        let index = self.index.withLock { $0 }.flatMap { $0.count == backends.count ? $0 : nil }
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
            func servingRegion(of code: UnsafeRawBufferPointer, level: String) -> Int? {
                guard !code.isEmpty else { return nil }
                let found = self.leastLoaded(
                    backends,
                    among: index?.candidates(for: code),
                    start: start,
                    where: { self.serves($0, code: code, configuration) }
                )
                if let trace {
                    let regions = Self.regionCounts(backends) { self.serves($0, code: code, configuration) }
                    trace(
                        regions.isEmpty
                            ? "no backend serves \(level) \(Self.text(code))"
                            : regions.map { "region \($0.name): \($0.healthy) healthy of \($0.all)" }.joined(
                                separator: ", "
                            )
                    )
                }
                return found
            }
            if let best = servingRegion(of: codes.country, level: "country")
                ?? servingRegion(of: codes.continent, level: "continent")
            {
                trace?(Self.chosen(backends[best]))
                return best
            }
            for (position, region) in configuration.fallback.enumerated() {
                let candidates = index?.byFallback[position]
                if let best = self.leastLoaded(
                    backends,
                    among: candidates,
                    start: start,
                    where: { $0.regionIs(region) }
                ) {
                    trace?("fallback region \(String(decoding: region, as: UTF8.self))")
                    trace?(Self.chosen(backends[best]))
                    return best
                }
            }
            guard let best = self.leastLoaded(backends, among: nil, start: start, where: { _ in true }) else {
                trace?("no healthy backend of \(backends.count)")
                return nil
            }
            trace?("no region serves this client: any healthy backend, \(backends.healthyCount) of \(backends.count)")
            trace?(Self.chosen(backends[best]))
            return best
        }
    }

    private static func chosen(_ backend: PluginBackend) -> String {
        let region = backend.region.isEmpty ? "" : ", region \(backend.region)"
        return "least loaded: \(backend.name) (\(backend.activeConnections) open, weight \(backend.weight)\(region))"
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

    /// The healthy backend that `matches` with the fewest active connections for its weight, from
    /// `candidates` (indices into `backends`) or, without them, the whole pool; ties go to the first
    /// from `start` on, which rotates.
    private func leastLoaded(
        _ backends: PluginBackends,
        among candidates: [Int]?,
        start: Int,
        where matches: (PluginBackend) -> Bool
    ) -> Int? {
        var best: Int?
        var bestActive = 0
        var bestWeight = 1
        let count = candidates?.count ?? backends.count
        guard count > 0 else { return nil }
        for step in 0..<count {
            let index = candidates.map { $0[(start + step) % count] } ?? (start + step) % count
            guard index < backends.count else { continue }
            let backend = backends[index]
            guard backend.isHealthy, matches(backend) else { continue }
            let weight = max(backend.weight, 1)
            if best == nil || backend.activeConnections * bestWeight < bestActive * weight {
                best = index
                bestActive = backend.activeConnections
                bestWeight = weight
            }
        }
        return best
    }
}

/// The configuration is immutable after creation; boxed to share it with the watcher thread.
final class GeoConfigurationBox: @unchecked Sendable {
    let value: GeoConfiguration

    init(_ value: GeoConfiguration) {
        self.value = value
    }
}
