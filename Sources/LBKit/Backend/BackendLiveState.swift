/// One backend's live state (its open connections, whether it is retired) for the pick's hot path:
/// its counters and health status held unretained, so that reading them costs two atomic loads and
/// no reference counting. Retaining and releasing the backend, its counters and its health status
/// was 70% of a plugin pick at 1,000 backends, and most of a least-connections pick.
///
/// Valid only while the `BackendPool` it came from is alive (the pool holds what it points to):
/// read it through the pool, or through something that keeps the pool.
public struct BackendLiveState: @unchecked Sendable {
    // @unchecked: Unmanaged references to Sendable objects that the pool keeps alive.
    @usableFromInline let counters: Unmanaged<BackendCounters>
    @usableFromInline let health: Unmanaged<BackendHealthStatus>

    init(_ backend: Backend) {
        self.counters = Unmanaged.passUnretained(backend.counters)
        self.health = Unmanaged.passUnretained(backend.health)
    }

    /// Open or connecting connections now.
    @inlinable public var activeConnections: Int { self.counters._withUnsafeGuaranteedRef { $0.activeConnections } }
    /// Retired backends get no new clients (except in panic mode).
    @inlinable public var isRetired: Bool { self.health._withUnsafeGuaranteedRef { $0.isRetired } }
}
