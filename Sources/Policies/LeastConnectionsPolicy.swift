import Atomics
import LBKit

/// Sends each client to the backend with the fewest active connections relative to its weight
/// (the comparison nginx's least_conn makes: `active_a * weight_b < active_b * weight_a`), with ties
/// broken by rotation so that an idle pool still spreads clients evenly.
///
/// Active connections count from the moment of the pick, so a burst of clients is spread before
/// their connects complete. A pick scans the pool once: O(n) relaxed atomic loads, no lock.
public final class LeastConnectionsPolicy: LoadBalancingPolicy {
    public static let name = "least-connections"

    public var name: String { Self.name }

    private let rotation = ManagedAtomic<UInt64>(0)

    public init() {}

    public func makeSelector(for pool: BackendPool) -> any BackendSelector {
        LeastConnectionsSelector(pool: pool, rotation: self.rotation)
    }
}

/// Serves least-connections picks for one pool. Locking contract: none.
final class LeastConnectionsSelector: BackendSelector {
    private let pool: BackendPool
    private let rotation: ManagedAtomic<UInt64>

    init(pool: BackendPool, rotation: ManagedAtomic<UInt64>) {
        self.pool = pool
        self.rotation = rotation
    }

    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? {
        let count = self.pool.count
        guard count > 0 else { return nil }
        let start = Int(self.rotation.loadThenWrappingIncrement(ordering: .relaxed) % UInt64(count))
        var best: Int?
        var bestActive = 0
        var bestWeight = 1
        for step in 0..<count {
            let index = (start + step) % count
            guard self.pool.isEligible(index, excluding: excluded) else { continue }
            let backend = self.pool[index]
            let active = backend.activeConnections
            // Strictly fewer wins, so among equals the first in rotation order is chosen.
            if best == nil || active * bestWeight < bestActive * backend.weight {
                best = index
                bestActive = active
                bestWeight = backend.weight
            }
        }
        return best
    }
}
