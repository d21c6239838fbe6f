import Atomics
import LBKit

/// Weighted round-robin with smooth interleaving: weights 5, 1, 1 give a a a b c a a, not
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

    /// The smooth weighted sequence of backend indices for one full cycle. Each backend's `w` turns
    /// are spread evenly over the cycle, the k-th at time (2k + 1) / 2w (earliest-deadline-first,
    /// as stride schedulers do), and the turns of all backends are merged in time order with a heap:
    /// O(T log n) for a cycle of T turns over n backends, so a pool of 10,000 weighted backends is
    /// built in milliseconds. Weights are divided by their greatest common divisor first, so 2, 2, 2
    /// is as short as 1, 1, 1. Ties go to the lower index.
    static func smoothSchedule(weights: [Int]) -> [Int] {
        guard !weights.isEmpty else { return [] }
        let divisor = weights.reduce(0) { greatestCommonDivisor($0, $1) }
        let reduced = weights.map { max(1, $0 / max(divisor, 1)) }
        let total = reduced.reduce(0, +)
        // turn[i]: backend i's next turn number k; its time is (2k + 1) / (2 * reduced[i]).
        var turn = [Int](repeating: 0, count: reduced.count)
        func earlier(_ a: Int, _ b: Int) -> Bool {
            let left = (2 * turn[a] + 1) * reduced[b]
            let right = (2 * turn[b] + 1) * reduced[a]
            return left != right ? left < right : a < b
        }
        var heap = Array(reduced.indices)
        func siftDown(_ start: Int) {
            var position = start
            while true {
                let left = 2 * position + 1
                guard left < heap.count else { return }
                var child = left
                if left + 1 < heap.count, earlier(heap[left + 1], heap[left]) { child = left + 1 }
                guard earlier(heap[child], heap[position]) else { return }
                heap.swapAt(position, child)
                position = child
            }
        }
        for position in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(position) }
        var schedule: [Int] = []
        schedule.reserveCapacity(total)
        for _ in 0..<total {
            let next = heap[0]
            schedule.append(next)
            turn[next] += 1
            if turn[next] == reduced[next] {
                heap[0] = heap[heap.count - 1]
                heap.removeLast()
            }
            if !heap.isEmpty { siftDown(0) }
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

    func explain(for client: ClientAddress, excluding excluded: BackendExclusions) -> PickExplanation {
        guard !self.schedule.isEmpty else { return PickExplanation(steps: ["the pool is empty"], backend: nil) }
        let length = UInt64(self.schedule.count)
        let start = self.position.load(ordering: .relaxed) % length
        var steps = [
            "schedule of \(length) turns over \(self.pool.count) backends (weights \(self.pool.backends.map(\.weight).map(String.init).joined(separator: ", ")))",
            "next turn \(start + 1) of \(length)",
        ]
        for step in 0..<length {
            let index = self.schedule[Int((start + step) % length)]
            let backend = self.pool[index]
            if self.pool.isEligible(index, excluding: excluded) {
                steps.append("round-robin: \(backend.address) (weight \(backend.weight))")
                return PickExplanation(steps: steps, backend: index)
            }
            steps.append("\(backend.address) skipped (\(excluded.contains(index) ? "excluded" : "retired"))")
        }
        steps.append("no backend eligible")
        return PickExplanation(steps: steps, backend: nil)
    }
}
