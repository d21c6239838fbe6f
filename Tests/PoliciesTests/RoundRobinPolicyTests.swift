import Dispatch
import LBKit
import NIOConcurrencyHelpers
import Testing

@testable import Policies

@Suite("round-robin")
struct RoundRobinPolicyTests {
    @Test("equal weights rotate exactly")
    func exactRotation() throws {
        let router = try makeRouter(weights: [1, 1, 1], policy: RoundRobinPolicy())
        let picks = (0..<300).map { _ in router.table.selector.pick(for: anyClient, excluding: .none) }
        #expect(picks == (0..<300).map { $0 % 3 })
    }

    @Test("weights interleave smoothly: 5, 1, 1 gives a a a b c a a")
    func smoothWeights() {
        #expect(RoundRobinPolicy.smoothSchedule(weights: [5, 1, 1]) == [0, 0, 0, 1, 2, 0, 0])
        #expect(RoundRobinPolicy.smoothSchedule(weights: [2, 1]) == [0, 1, 0])
        #expect(RoundRobinPolicy.smoothSchedule(weights: [2, 2, 2]) == [0, 1, 2])
        #expect(RoundRobinPolicy.smoothSchedule(weights: []) == [])
    }

    @Test("each backend's share equals its weight over whole cycles", arguments: [[1, 2, 3], [7, 1], [256, 1, 13]])
    func weightedShares(weights: [Int]) throws {
        let router = try makeRouter(weights: weights, policy: RoundRobinPolicy())
        let cycle = weights.reduce(0, +)
        var counts = [Int](repeating: 0, count: weights.count)
        for _ in 0..<(cycle * 4) {
            counts[try #require(router.table.selector.pick(for: anyClient, excluding: .none))] += 1
        }
        #expect(counts == weights.map { $0 * 4 })
    }

    @Test("10,000 weighted backends: a cycle gives each backend its weight; weight 1 never gets two turns in a row")
    func largeWeightedPool() {
        let weights = (0..<10_000).map { $0 % 7 + 1 }
        let schedule = RoundRobinPolicy.smoothSchedule(weights: weights)
        var counts = [Int](repeating: 0, count: weights.count)
        for index in schedule { counts[index] += 1 }
        #expect(counts == weights)
        #expect(zip(schedule, schedule.dropFirst()).allSatisfy { $0 != $1 || weights[$0] > 1 })
    }

    @Test("excluded backends are skipped; all excluded gives nil")
    func exclusions() throws {
        let router = try makeRouter(weights: [1, 1, 1], policy: RoundRobinPolicy())
        var excluded = BackendExclusions()
        excluded.insert(1)
        for _ in 0..<30 {
            #expect(router.table.selector.pick(for: anyClient, excluding: excluded) != 1)
        }
        excluded.insert(0)
        excluded.insert(2)
        #expect(router.table.selector.pick(for: anyClient, excluding: excluded) == nil)
    }

    @Test("an empty pool gives nil")
    func emptyPool() throws {
        let router = try makeRouter(weights: [], policy: RoundRobinPolicy())
        #expect(router.table.selector.pick(for: anyClient, excluding: .none) == nil)
    }

    @Test("concurrent picks from many threads stay exact: every backend gets the same count")
    func concurrentPicks() throws {
        let router = try makeRouter(weights: [1, 1, 1, 1], policy: RoundRobinPolicy())
        let selector = router.table.selector
        let threads = 8
        let picksPerThread = 40_000
        let counts = NIOLockedValueBox([Int](repeating: 0, count: 4))
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            var local = [Int](repeating: 0, count: 4)
            for _ in 0..<picksPerThread {
                if let index = selector.pick(for: anyClient, excluding: .none) { local[index] += 1 }
            }
            counts.withLockedValue { total in for i in 0..<4 { total[i] += local[i] } }
        }
        #expect(counts.withLockedValue { $0 } == [Int](repeating: threads * picksPerThread / 4, count: 4))
    }

    @Test("a pool change keeps the rotation going and keeps each backend's counters")
    func poolChangeKeepsState() throws {
        let policy = RoundRobinPolicy()
        let router = try makeRouter(weights: [1, 1], policy: policy)
        let before = router.pool[0].counters
        try router.setPool(router.pool.specs + [BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 9003))])
        #expect(router.pool.count == 3)
        #expect(router.pool[0].counters === before)
        let picks = (0..<6).map { _ in router.table.selector.pick(for: anyClient, excluding: .none)! }
        #expect(Set(picks) == [0, 1, 2])
    }
}
