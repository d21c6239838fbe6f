import CLBPolicy
import Foundation
import Synchronization

/// One geo-routing instance: the configuration, the database in use (swapped when a new file
/// version appears on disk) and the pick.
///
/// Order of preference for a client: backends whose region is its country (or a configured region
/// listing that country), then its continent (likewise), then the configured fallback regions in
/// order, then any healthy backend. Among the backends of the first level that has any, the one
/// with the fewest active connections relative to its weight; ties rotate.
final class GeoRouter: Sendable {
    private let configuration: GeoConfigurationBox
    private let database: Mutex<GeoDatabase>
    private let rotation = Atomic<UInt64>(0)
    /// The last file version refused, so that a broken file is reported once, not on every check.
    private let refusedVersion = Mutex<GeoDatabase.FileVersion?>(nil)

    init(configuration: GeoConfiguration) throws(GeoDatabase.Failure) {
        self.configuration = GeoConfigurationBox(configuration)
        self.database = Mutex(try GeoDatabase(path: configuration.database))
    }

    /// Has the plugin's one watcher thread check the database file for new versions.
    func startWatching() {
        GeoWatcher.shared.add(self, interval: self.configuration.value.reloadCheckInterval)
    }

    /// Stops the checks at once (the instance is being destroyed).
    func stop() {
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
            GeoLog.write(L4LB_LOG_INFO, "reloaded \(path) (\(fresh.databaseType))")
        } catch {
            self.refusedVersion.withLock { $0 = version }
            GeoLog.write(
                L4LB_LOG_WARNING,
                "refused the new version of \(path): \(error.message); keeping the one in use"
            )
        }
    }

    func pick(client: UnsafePointer<l4lb_address>, backends: UnsafeBufferPointer<l4lb_backend>) -> Int64 {
        let database = self.database.withLock { $0 }
        let configuration = self.configuration.value
        let start = Int(self.rotation.wrappingAdd(1, ordering: .relaxed).oldValue % UInt64(max(backends.count, 1)))
        // The codes point into the database's memory: keep it alive until the matching is done.
        return withExtendedLifetime(database) {
            let codes = Self.withSockaddr(client.pointee) { database.lookup($0) } ?? .unknown
            func servingRegion(of code: UnsafeRawBufferPointer) -> Int? {
                guard !code.isEmpty else { return nil }
                return self.leastLoaded(backends, start: start, where: { self.serves($0, code: code, configuration) })
            }
            if let best = servingRegion(of: codes.country) ?? servingRegion(of: codes.continent) {
                return Int64(best)
            }
            for region in configuration.fallback {
                if let best = self.leastLoaded(backends, start: start, where: { Self.equals($0.region, region) }) {
                    return Int64(best)
                }
            }
            return Int64(self.leastLoaded(backends, start: start, where: { _ in true }) ?? Int(L4LB_PICK_NONE))
        }
    }

    /// Whether `backend`'s region is `code` or a configured region that lists `code`.
    private func serves(
        _ backend: l4lb_backend,
        code: UnsafeRawBufferPointer,
        _ configuration: GeoConfiguration
    ) -> Bool {
        guard backend.region.length > 0 else { return false }
        if Self.equals(backend.region, code) { return true }
        for region in configuration.regions where Self.equals(backend.region, region.name) {
            return region.codes.contains { $0.elementsEqual(code) }
        }
        return false
    }

    private func leastLoaded(
        _ backends: UnsafeBufferPointer<l4lb_backend>,
        start: Int,
        where matches: (l4lb_backend) -> Bool
    ) -> Int? {
        var best: Int?
        var bestActive: UInt64 = 0
        var bestWeight: UInt64 = 1
        for step in 0..<backends.count {
            let index = (start + step) % backends.count
            let backend = backends[index]
            guard backend.healthy, matches(backend) else { continue }
            let weight = UInt64(max(backend.weight, 1))
            if best == nil || backend.active_connections * bestWeight < bestActive * weight {
                best = index
                bestActive = backend.active_connections
                bestWeight = weight
            }
        }
        return best
    }

    private static func equals(_ string: l4lb_string, _ bytes: some Collection<UInt8>) -> Bool {
        guard string.length == bytes.count, let data = string.data else { return string.length == 0 && bytes.isEmpty }
        return UnsafeRawBufferPointer(start: data, count: string.length).elementsEqual(bytes)
    }

    /// The client as a sockaddr for libmaxminddb; IPv4-mapped IPv6 addresses are looked up as IPv4.
    private static func withSockaddr<Result>(
        _ address: l4lb_address,
        _ body: (UnsafePointer<sockaddr>) -> Result
    ) -> Result? {
        var bytes = address.bytes
        return withUnsafeBytes(of: &bytes) { raw -> Result? in
            let isMapped =
                address.family == 6 && raw.prefix(10).allSatisfy { $0 == 0 } && raw[10] == 0xff && raw[11] == 0xff
            if address.family == 4 || isMapped {
                var v4 = sockaddr_in()
                v4.sin_family = sa_family_t(AF_INET)
                withUnsafeMutableBytes(of: &v4.sin_addr) {
                    $0.copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: raw[(isMapped ? 12 : 0)..<(isMapped ? 16 : 4)])
                    )
                }
                return withUnsafePointer(to: &v4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
            }
            guard address.family == 6 else { return nil }
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            withUnsafeMutableBytes(of: &v6.sin6_addr) {
                $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[0..<16]))
            }
            return withUnsafePointer(to: &v6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
        }
    }
}

/// The configuration is immutable after creation; boxed to share it with the watcher thread.
final class GeoConfigurationBox: @unchecked Sendable {
    let value: GeoConfiguration

    init(_ value: GeoConfiguration) {
        self.value = value
    }
}
