import LBKit
import NIOConcurrencyHelpers

/// Sends each client to the backend with the fewest active connections relative to its weight
/// (the comparison nginx's least_conn makes: `active_a * weight_b < active_b * weight_a`), ties
/// going to the backend picked longest ago, so that an idle pool still spreads clients evenly.
///
/// Active connections count from the moment of the pick, so a burst of clients is spread before
/// their connects complete. The pool is kept ordered by load in a `LoadHeap` (HAProxy's lb_fwlc.c
/// keeps a tree): a pick is O(log n) under a lock held for that long, and a closed connection
/// re-sorts its backend through `connectionClosed`.
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
/// the selector's own lock for one O(log n) heap update; nothing else is locked.
final class LeastConnectionsSelector: BackendSelector {
    private let pool: BackendPool
    private let heap: NIOLockedValueBox<LoadHeap>
    /// Backends by their counters' identity, which survives pool changes (a backend's `Backend`
    /// object does not).
    private let indexByCounters: [ObjectIdentifier: Int]

    init(pool: BackendPool) {
        self.pool = pool
        self.heap = NIOLockedValueBox(
            LoadHeap(weights: pool.backends.map(\.weight), loads: pool.backends.map(\.activeConnections))
        )
        var indices: [ObjectIdentifier: Int] = [:]
        for (index, backend) in pool.backends.enumerated() {
            indices[ObjectIdentifier(backend.counters)] = index
        }
        self.indexByCounters = indices
    }

    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? {
        let pool = self.pool
        let panic = pool.panic.isOn
        return self.heap.withLockedValue { heap in
            heap.pick(
                currentLoad: { pool[$0].activeConnections },
                isRetired: { !panic && pool[$0].isRetired },
                isEligible: { pool.isEligible($0, excluding: excluded) }
            )
        }
    }

    /// A scan of the live loads, the heap untouched. On a tie the pick goes to the backend picked
    /// least recently (the heap's own tie-break, read from it), which the explanation names as a tie.
    func explain(for client: ClientAddress, excluding excluded: BackendExclusions) -> PickExplanation {
        let pool = self.pool
        let eligible = pool.backends.indices.filter { pool.isEligible($0, excluding: excluded) }
        guard !eligible.isEmpty else { return PickExplanation(steps: ["no backend eligible"], backend: nil) }
        func load(_ index: Int) -> Double { Double(pool[index].activeConnections) / Double(pool[index].weight) }
        let lastPicks = self.heap.withLockedValue { $0.lastPicks() }
        // The pick's order: load per weight compared without division, then picked longest ago.
        let ordered = eligible.sorted {
            let left = pool[$0].activeConnections * pool[$1].weight
            let right = pool[$1].activeConnections * pool[$0].weight
            return left != right ? left < right : lastPicks[$0] < lastPicks[$1]
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
        if tied > 1 { steps.append("\(tied) tied: the one picked least recently wins") }
        steps.append("least loaded: \(pool[best].address) (\(pool[best].activeConnections) open)")
        return PickExplanation(steps: steps, backend: best)
    }

    func refresh(_ backend: Backend) {
        guard let index = self.indexByCounters[ObjectIdentifier(backend.counters)] else { return }
        let load = self.pool[index].activeConnections
        self.heap.withLockedValue { $0.refresh(index, load: load) }
    }
}
