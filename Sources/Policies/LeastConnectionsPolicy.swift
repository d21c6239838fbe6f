import LBKit
import NIOConcurrencyHelpers
import Synchronization

/// Sends each client to the backend with the fewest active connections relative to its weight
/// (the comparison nginx's least_conn makes: `active_a * weight_b < active_b * weight_a`), ties
/// going to the backend that has waited longest at its load (HAProxy's order), so that an idle pool
/// still spreads clients evenly.
///
/// Active connections count from the moment of the pick, so a burst of clients is spread before
/// their connects complete. The pool is kept ordered by load in a `LoadQueue` (HAProxy's lb_fwlc.c
/// keeps a tree): a pick is O(1) under a lock held for that long (O(log k) when a backend reaches a
/// load no other has), and a closed connection re-queues its backend through `connectionClosed`.
public final class LeastConnectionsPolicy: LoadBalancingPolicy {
    public static let name = "least-connections"

    public var name: String { Self.name }

    /// The selector of the pool in force, which closes are reported to.
    private let current = NIOLockedValueBox<LeastConnectionsSelector?>(nil)

    public init() {}

    public func makeSelector(for pool: BackendPool) -> any BackendSelector {
        let selector = LeastConnectionsSelector(pool: pool)
        self.current.withLockedValue { $0 = selector }
        return selector
    }

    public func connectionClosed(to backend: Backend) {
        self.current.withLockedValue { $0 }?.refresh(backend)
    }
}

/// Serves least-connections picks for one pool. Locking contract: each pick and each refresh holds
/// the selector's own lock for one queue update (O(1) but for a load no backend had); nothing else
/// is locked.
///
/// The lock is a `Mutex` (a futex: one atomic exchange each way when uncontended) and loads are read
/// through the pool's live states, without reference counting: with a pthread mutex and a retain
/// and release of each backend read, a pick at 1,000 backends took 258 ns.
final class LeastConnectionsSelector: BackendSelector, @unchecked Sendable {
    // @unchecked: `states` is written in init only and freed in deinit; `panic` is kept by `pool`.
    private let pool: BackendPool
    private let queue: Mutex<LoadQueue>
    /// The pool's live states, copied to memory of the selector's own so that a pick reads them
    /// without retaining an array; valid while `pool` lives.
    private let states: UnsafeMutableBufferPointer<BackendLiveState>
    /// The pool's panic switch, unretained (the pool keeps it).
    private let panic: Unmanaged<PanicSwitch>
    /// Backends by their counters' identity, which survives pool changes (a backend's `Backend`
    /// object does not).
    private let indexByCounters: [ObjectIdentifier: Int]

    init(pool: BackendPool) {
        self.pool = pool
        self.queue = Mutex(
            LoadQueue(weights: pool.backends.map(\.weight), loads: pool.backends.map(\.activeConnections))
        )
        var indices: [ObjectIdentifier: Int] = [:]
        for (index, backend) in pool.backends.enumerated() {
            indices[ObjectIdentifier(backend.counters)] = index
        }
        self.indexByCounters = indices
        self.states = UnsafeMutableBufferPointer.allocate(capacity: pool.count)
        _ = self.states.initialize(from: pool.liveStates)
        self.panic = Unmanaged.passUnretained(pool.panic)
    }

    deinit {
        // Trivial values: nothing to deinitialize.
        self.states.deallocate()
    }

    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? {
        let panic = self.panic._withUnsafeGuaranteedRef { $0.isOn }
        let states = self.states
        return self.queue.withLock { queue in
            queue.pick(
                currentLoad: { states[$0].activeConnections },
                isRetired: { !panic && states[$0].isRetired },
                isEligible: {
                    BackendPool.isEligible($0, excluding: excluded, retired: states[$0].isRetired, panic: panic)
                }
            )
        }
    }

    /// A scan of the live loads, the queue untouched. On a tie the pick goes to the backend that has
    /// waited longest at its load (the queue's own tie-break, read from it), which the explanation
    /// names as a tie.
    func explain(for client: ClientAddress, excluding excluded: BackendExclusions) -> PickExplanation {
        let pool = self.pool
        let eligible = pool.backends.indices.filter { pool.isEligible($0, excluding: excluded) }
        guard !eligible.isEmpty else { return PickExplanation(steps: ["no backend eligible"], backend: nil) }
        func load(_ index: Int) -> Double { Double(pool[index].activeConnections) / Double(pool[index].weight) }
        let ranks = self.queue.withLock { $0.tieRanks() }
        // The pick's order: load per weight compared without division, then place in the queue.
        let ordered = eligible.sorted {
            let left = pool[$0].activeConnections * pool[$1].weight
            let right = pool[$1].activeConnections * pool[$0].weight
            return left != right ? left < right : ranks[$0] < ranks[$1]
        }
        let compared = ordered.prefix(5).map {
            "\(pool[$0].address) \(pool[$0].activeConnections) open / weight \(pool[$0].weight)"
        }
        var steps = [
            "\(eligible.count) of \(pool.count) backends eligible",
            "loads: " + compared.joined(separator: ", ") + (ordered.count > 5 ? ", ..." : ""),
        ]
        let best = ordered[0]
        let tied = ordered.filter { load($0) == load(best) }.count
        if tied > 1 { steps.append("\(tied) tied: the one longest in the queue wins") }
        steps.append("least loaded: \(pool[best].address) (\(pool[best].activeConnections) open)")
        return PickExplanation(steps: steps, backend: best)
    }

    func refresh(_ backend: Backend) {
        guard let index = self.indexByCounters[ObjectIdentifier(backend.counters)] else { return }
        let load = self.states[index].activeConnections
        self.queue.withLock { $0.refresh(index, load: load) }
    }
}
