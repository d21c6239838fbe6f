import Atomics
import LBKit

/// Weighted round-robin with nginx's smooth interleaving: weights 5, 1, 1 give a a b a c a a, not
/// a a a a a b c. Equal weights give an exact rotation.
///
/// The interleaved schedule is built once per pool (off the hot path, as HAProxy's lb_map.c does);
/// a pick is one atomic increment and an array read. The position is shared by every selector of this
/// policy, so a pool change continues the rotation instead of restarting it.
public final class RoundRobinPolicy: LoadBalancingPolicy {
    public static let name = "round-robin"

    public var name: String { Self.name }

    private let position = ManagedAtomic<UInt64>(0)

    public init() {}

    public func makeSelector(for pool: BackendPool) -> any BackendSelector {
        RoundRobinSelector(
            pool: pool,
            schedule: Self.smoothSchedule(weights: pool.backends.map(\.weight)),
            position: self.position
        )
    }

    /// The smooth weighted sequence of backend indices for one full cycle (nginx's algorithm: every
    /// step each backend gains its weight, the richest is chosen and pays the total). Weights are
    /// divided by their greatest common divisor first, so 2, 2, 2 is as short as 1, 1, 1.
    static func smoothSchedule(weights: [Int]) -> [Int] {
        guard !weights.isEmpty else { return [] }
        let divisor = weights.reduce(0) { greatestCommonDivisor($0, $1) }
        let reduced = weights.map { $0 / max(divisor, 1) }
        let total = reduced.reduce(0, +)
        var current = [Int](repeating: 0, count: reduced.count)
        var schedule: [Int] = []
        schedule.reserveCapacity(total)
        for _ in 0..<total {
            var best = 0
            for index in reduced.indices {
                current[index] += reduced[index]
                if current[index] > current[best] { best = index }
            }
            current[best] -= total
            schedule.append(best)
        }
        return schedule
    }

    private static func greatestCommonDivisor(_ a: Int, _ b: Int) -> Int {
        b == 0 ? a : greatestCommonDivisor(b, a % b)
    }
}

/// Serves round-robin picks for one pool. Locking contract: none; one relaxed atomic increment.
final class RoundRobinSelector: BackendSelector {
    private let pool: BackendPool
    private let schedule: [Int]
    private let position: ManagedAtomic<UInt64>

    init(pool: BackendPool, schedule: [Int], position: ManagedAtomic<UInt64>) {
        self.pool = pool
        self.schedule = schedule
        self.position = position
    }

    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? {
        guard !self.schedule.isEmpty else { return nil }
        let length = UInt64(self.schedule.count)
        let start = self.position.loadThenWrappingIncrement(ordering: .relaxed) % length
        // Walking on from the scheduled slot keeps the weighted order when a backend must be avoided.
        for step in 0..<length {
            let index = self.schedule[Int((start + step) % length)]
            if self.pool.isEligible(index, excluding: excluded) {
                return index
            }
        }
        return nil
    }
}
