import Atomics
import NIOConcurrencyHelpers
import NIOCore

/// The routing state in force: the pool snapshot, the active policy and the selector the policy built
/// for that pool. One immutable object, so a connection sees a matching pool and selector.
public final class RoutingTable: AtomicReference, Sendable {
    public let pool: BackendPool
    public let policy: any LoadBalancingPolicy
    public let selector: any BackendSelector
    /// Picks made with this table's policy, shared by every table of the same policy name.
    let picks: ManagedAtomic<Int>
    /// The shadow policy's selector for this pool, when one is installed.
    public let shadow: ShadowRoute?

    init(pool: BackendPool, policy: any LoadBalancingPolicy, picks: ManagedAtomic<Int>, shadow: ShadowPolicy?) {
        self.pool = pool
        self.policy = policy
        self.selector = policy.makeSelector(for: pool)
        self.picks = picks
        self.shadow = shadow.map { ShadowRoute(shadow: $0, pool: pool) }
    }
}

/// Holds the routing table and swaps it when the pool or the policy changes.
///
/// Locking contract: readers (`table`, on every relay thread, once per connection) do one atomic load
/// and never lock. Writers (flags at start, the control plane) are serialized by `updateLock`, which
/// the data plane never takes.
public final class Router: Sendable {
    private let current: ManagedAtomic<RoutingTable>
    private let updateLock = NIOLock()
    private let nextGeneration = ManagedAtomic<UInt64>(1)
    private let observers = NIOLockedValueBox<[@Sendable (BackendPool) -> Void]>([])
    /// Shared by every pool this router builds; the health checker turns it on and off.
    public let panic = PanicSwitch()
    private let pickCounters: NIOLockedValueBox<[String: ManagedAtomic<Int>]>

    public init(policy: any LoadBalancingPolicy) {
        let picks = ManagedAtomic<Int>(0)
        self.pickCounters = NIOLockedValueBox([policy.name: picks])
        self.current = ManagedAtomic(
            RoutingTable(
                pool: BackendPool(backends: [], generation: 0, panic: self.panic),
                policy: policy,
                picks: picks,
                shadow: nil
            )
        )
    }

    /// Picks made so far by each policy that has been in force.
    public var picksByPolicy: [String: Int] {
        self.pickCounters.withLockedValue { $0.mapValues { $0.load(ordering: .relaxed) } }
    }

    private func picks(for policy: any LoadBalancingPolicy) -> ManagedAtomic<Int> {
        self.pickCounters.withLockedValue { counters in
            if let counter = counters[policy.name] { return counter }
            let counter = ManagedAtomic<Int>(0)
            counters[policy.name] = counter
            return counter
        }
    }

    /// Calls `observer` with every pool installed from now on, after it is in force (on the thread
    /// that changed it; the observer must not block).
    public func observePoolChanges(_ observer: @escaping @Sendable (BackendPool) -> Void) {
        self.observers.withLockedValue { $0.append(observer) }
    }

    /// The table in force now.
    public var table: RoutingTable { self.current.load(ordering: .acquiring) }

    public var pool: BackendPool { self.table.pool }
    public var policy: any LoadBalancingPolicy { self.table.policy }

    /// Resolves `specs` and installs them as the new pool. A backend already in the pool keeps its
    /// counters and health, even when its weight or region changed; a repeated address is kept once
    /// (the first).
    /// Throws, changing nothing, if an address does not resolve.
    @discardableResult
    public func setPool(_ specs: [BackendSpec]) throws(L4LBError) -> BackendPool {
        var seen = Set<HostAndPort>()
        let unique = specs.filter { seen.insert($0.address).inserted }
        var resolved: [(BackendSpec, SocketAddress)] = []
        resolved.reserveCapacity(unique.count)
        let own = self.ownListeners.withLockedValue { $0 }
        for spec in unique {
            let address = try BackendResolver.resolve(spec.address)
            try own.check(address, name: spec.address)
            resolved.append((spec, address))
        }
        let pool = self.updateLock.withLock {
            let old = self.current.load(ordering: .acquiring)
            // By address, so that a pool of n backends is rebuilt in O(n), not O(n^2).
            var previous: [HostAndPort: Backend] = [:]
            previous.reserveCapacity(old.pool.count)
            for backend in old.pool.backends { previous[backend.address] = backend }
            let backends = resolved.map { spec, socketAddress -> Backend in
                let before = previous[spec.address]
                if let before, before.spec == spec, before.socketAddress == socketAddress {
                    // Unchanged: the same object, with nothing rebuilt.
                    return before
                }
                return Backend(
                    spec: spec,
                    socketAddress: socketAddress,
                    counters: before?.counters ?? BackendCounters(),
                    health: before?.health ?? BackendHealthStatus()
                )
            }
            let pool = BackendPool(
                backends: backends,
                generation: self.nextGeneration.loadThenWrappingIncrement(ordering: .relaxed),
                panic: self.panic
            )
            self.current.store(
                RoutingTable(pool: pool, policy: old.policy, picks: old.picks, shadow: old.shadow?.shadow),
                ordering: .releasing
            )
            return pool
        }
        for observer in self.observers.withLockedValue({ $0 }) {
            observer(pool)
        }
        return pool
    }

    private let ownListeners = NIOLockedValueBox(OwnListeners.none)

    /// Tells the router where l4lb listens, so that no pool may contain those addresses; throws,
    /// naming the first, if the pool in use has one (the addresses are kept either way).
    public func setOwnListeners(_ listeners: OwnListeners) throws(L4LBError) {
        self.ownListeners.withLockedValue { $0 = listeners }
        for backend in self.pool.backends {
            try listeners.check(backend.socketAddress, name: backend.address)
        }
    }

    /// Installs `policy` for the next clients; open connections are not touched.
    public func setPolicy(_ policy: any LoadBalancingPolicy) {
        self.updateLock.withLock {
            let old = self.current.load(ordering: .acquiring)
            self.current.store(
                RoutingTable(
                    pool: old.pool,
                    policy: policy,
                    picks: self.picks(for: policy),
                    shadow: old.shadow?.shadow
                ),
                ordering: .releasing
            )
        }
    }

    /// Installs `shadow` beside the active policy (asked, never obeyed), replacing any other; nil
    /// removes it.
    public func setShadow(_ shadow: ShadowPolicy?) {
        self.updateLock.withLock {
            let old = self.current.load(ordering: .acquiring)
            self.current.store(
                RoutingTable(pool: old.pool, policy: old.policy, picks: old.picks, shadow: shadow),
                ordering: .releasing
            )
        }
    }

    /// The shadow policy's counts against the pool in force, when one is installed.
    public var shadowReport: ShadowReport? {
        let table = self.table
        return table.shadow?.shadow.report(pool: table.pool)
    }
}
