import Atomics

/// Live counters of one backend, shared by every pool snapshot that contains it, so that an update
/// of the pool (a weight change, another backend added) never resets what policies read.
///
/// Every counter is a relaxed atomic: relay threads bump them concurrently and nobody needs ordering
/// between two counters.
public final class BackendCounters: Sendable {
    // @usableFromInline: `activeConnections` is inlined into policies' picks, which read it for
    // every backend they consider (a call across the module boundary was 3-10% of a pick).
    @usableFromInline let active = ManagedAtomic<Int>(0)
    private let total = ManagedAtomic<Int>(0)
    private let failures = ManagedAtomic<Int>(0)
    private let fromClients = ManagedAtomic<Int>(0)
    private let fromBackend = ManagedAtomic<Int>(0)

    public init() {}

    /// Connections picked for this backend and not yet closed, including ones still connecting:
    /// least-connections must see a burst of new clients before their connects finish.
    @inlinable public var activeConnections: Int { self.active.load(ordering: .relaxed) }
    /// Connections ever picked for this backend.
    public var totalConnections: Int { self.total.load(ordering: .relaxed) }
    /// Connects to this backend that failed (refused, timed out, reset).
    public var connectFailures: Int { self.failures.load(ordering: .relaxed) }

    /// Bytes relayed from clients to this backend, counted when each connection ends.
    public var bytesFromClients: Int { self.fromClients.load(ordering: .relaxed) }
    /// Bytes relayed from this backend to clients, counted when each connection ends.
    public var bytesFromBackend: Int { self.fromBackend.load(ordering: .relaxed) }

    /// A connection was picked for this backend. Called by the data plane (and by an embedder or a
    /// benchmark that drives picks itself), before the policy's `connectionOpened`.
    public func connectionStarted() {
        self.active.wrappingIncrement(ordering: .relaxed)
        self.total.wrappingIncrement(ordering: .relaxed)
    }

    /// A connection that `connectionStarted` counted ended; before the policy's `connectionClosed`.
    public func connectionEnded() {
        self.active.wrappingDecrement(ordering: .relaxed)
    }

    func relayed(fromClient: UInt64, fromBackend: UInt64) {
        self.fromClients.wrappingIncrement(by: Int(truncatingIfNeeded: fromClient), ordering: .relaxed)
        self.fromBackend.wrappingIncrement(by: Int(truncatingIfNeeded: fromBackend), ordering: .relaxed)
    }

    func connectFailed() {
        self.failures.wrappingIncrement(ordering: .relaxed)
    }
}
