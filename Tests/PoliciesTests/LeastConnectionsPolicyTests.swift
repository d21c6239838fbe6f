import Dispatch
import FuzzSupport
import NIOConcurrencyHelpers
import Testing

@testable import LBKit
@testable import Policies

@Suite("least-connections")
struct LeastConnectionsPolicyTests {
    /// Opens `count` connections' worth of counters on backend `index`, as the data plane does on a pick.
    private func hold(_ count: Int, on index: Int, in router: Router) {
        for _ in 0..<count { router.pool[index].counters.connectionStarted() }
    }

    @Test("picks the backend with the fewest active connections")
    func fewestWins() throws {
        let router = try makeRouter(weights: [1, 1, 1], policy: LeastConnectionsPolicy())
        self.hold(3, on: 0, in: router)
        self.hold(1, on: 1, in: router)
        self.hold(2, on: 2, in: router)
        for _ in 0..<10 {
            #expect(router.table.selector.pick(for: anyClient, excluding: .none) == 1)
        }
    }

    @Test("ties are broken by rotation")
    func tiesRotate() throws {
        let router = try makeRouter(weights: [1, 1, 1], policy: LeastConnectionsPolicy())
        let picks = (0..<30).compactMap { _ in router.table.selector.pick(for: anyClient, excluding: .none) }
        #expect(Set(picks) == [0, 1, 2])
        #expect(picks.filter { $0 == 0 }.count == 10)
    }

    @Test("weights scale the comparison: weight 3 with 2 connections beats weight 1 with 1")
    func weighted() throws {
        let router = try makeRouter(weights: [1, 3], policy: LeastConnectionsPolicy())
        self.hold(1, on: 0, in: router)
        self.hold(2, on: 1, in: router)
        #expect(router.table.selector.pick(for: anyClient, excluding: .none) == 1)
        self.hold(2, on: 1, in: router)  // 4/3 > 1/1
        #expect(router.table.selector.pick(for: anyClient, excluding: .none) == 0)
    }

    @Test("a burst of picks, each counted at once, spreads evenly")
    func burstSpreads() throws {
        let router = try makeRouter(weights: [1, 1, 1, 1], policy: LeastConnectionsPolicy())
        for _ in 0..<400 {
            let index = try #require(router.table.selector.pick(for: anyClient, excluding: .none))
            router.pool[index].counters.connectionStarted()
        }
        #expect(router.pool.backends.map(\.activeConnections) == [100, 100, 100, 100])
    }

    @Test("excluded backends are never picked, even when least loaded")
    func exclusions() throws {
        let router = try makeRouter(weights: [1, 1], policy: LeastConnectionsPolicy())
        self.hold(5, on: 1, in: router)
        var excluded = BackendExclusions()
        excluded.insert(0)
        #expect(router.table.selector.pick(for: anyClient, excluding: excluded) == 1)
        excluded.insert(1)
        #expect(router.table.selector.pick(for: anyClient, excluding: excluded) == nil)
    }

    @Test("concurrent picks with counting from many threads stay balanced")
    func concurrentPicks() throws {
        let router = try makeRouter(weights: [1, 1, 1, 1], policy: LeastConnectionsPolicy())
        let selector = router.table.selector
        let pool = router.pool
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<5_000 {
                guard let index = selector.pick(for: anyClient, excluding: .none) else { continue }
                pool[index].counters.connectionStarted()
            }
        }
        let active = pool.backends.map(\.activeConnections)
        #expect(active.reduce(0, +) == 40_000)
        // Racing picks may read the same counts; the spread stays within a few per thread.
        #expect(active.max()! - active.min()! <= 16)
    }

    @Test("on 1,000 backends with random loads and weights, every pick is the least loaded, as a full scan finds")
    func matchesFullScan() throws {
        var generator = SplitMix64(seed: 42)
        let weights = (0..<1_000).map { _ in Int(generator.next() % 5) + 1 }
        let policy = LeastConnectionsPolicy()
        let router = try makeRouter(weights: weights, policy: policy)
        for index in 0..<1_000 { self.hold(Int(generator.next() % 50), on: index, in: router) }
        let pool = router.pool
        for round in 0..<2_000 {
            let picked = try #require(router.table.selector.pick(for: anyClient, excluding: .none))
            let best = pool.backends.map { Double($0.activeConnections) / Double($0.weight) }.min()!
            #expect(Double(pool[picked].activeConnections) / Double(pool[picked].weight) == best)
            pool[picked].counters.connectionStarted()
            policy.connectionOpened(to: pool[picked])
            if round % 3 == 0 {
                // Close one somewhere, as the data plane does: count, then tell the policy.
                let closing = pool[Int(generator.next() % 1_000)]
                if closing.activeConnections > 0 {
                    closing.counters.connectionEnded()
                    policy.connectionClosed(to: closing)
                }
            }
        }
    }

    @Test("equally loaded backends take turns, in pool order first; one whose load changes joins the back")
    func tiesTakeTurns() throws {
        let policy = LeastConnectionsPolicy()
        let router = try makeRouter(weights: [1, 1, 1, 1, 1], policy: policy)
        let picks = (0..<10).compactMap { _ in router.table.selector.pick(for: anyClient, excluding: .none) }
        #expect(picks == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
        // Backend 1 gains a connection (the queue finds out when it reaches the head) and leaves the
        // turns; when the connection closes it is back at load 0, behind the others.
        router.pool[1].counters.connectionStarted()
        let busy = (0..<5).compactMap { _ in router.table.selector.pick(for: anyClient, excluding: .none) }
        #expect(busy == [0, 2, 3, 4, 0])
        router.pool[1].counters.connectionEnded()
        policy.connectionClosed(to: router.pool[1])
        let after = (0..<5).compactMap { _ in router.table.selector.pick(for: anyClient, excluding: .none) }
        #expect(after == [2, 3, 4, 0, 1])
    }

    @Test(
        "random opens, closes, retirements and exclusions over weights 1-256: every pick is the least loaded eligible"
    )
    func randomOperations() throws {
        var generator = SplitMix64(seed: 7)
        let count = 100
        let weights = (0..<count).map { _ in Int(generator.next() % 256) + 1 }
        let policy = LeastConnectionsPolicy()
        let router = try makeRouter(weights: weights, policy: policy)
        let pool = router.pool
        var picks = 0
        for _ in 0..<20_000 {
            let backend = pool[Int(generator.next() % UInt64(count))]
            switch generator.next() % 10 {
            case 0:
                backend.health.setRetired(!backend.isRetired)
            case 1, 2:
                if backend.activeConnections > 0 {
                    backend.counters.connectionEnded()
                    policy.connectionClosed(to: backend)
                }
            default:
                var excluded = BackendExclusions()
                for _ in 0..<Int(generator.next() % 4) { excluded.insert(Int(generator.next() % UInt64(count))) }
                let eligible = pool.backends.indices.filter { !excluded.contains($0) && !pool[$0].isRetired }
                let picked = router.table.selector.pick(for: anyClient, excluding: excluded)
                guard let picked else {
                    #expect(eligible.isEmpty, "no pick, with \(eligible.count) eligible")
                    continue
                }
                #expect(eligible.contains(picked))
                // Nothing eligible is less loaded for its weight (compared without division).
                let lighter = eligible.first {
                    pool[$0].activeConnections * pool[picked].weight < pool[picked].activeConnections * pool[$0].weight
                }
                #expect(
                    lighter == nil,
                    "picked \(picked) (\(pool[picked].activeConnections)/\(pool[picked].weight)), but \(lighter.map { "\($0) (\(pool[$0].activeConnections)/\(pool[$0].weight))" } ?? "") is less loaded; \(excluded.count) excluded"
                )
                backend.counters.connectionStarted()  // a connection the policy hears of only at close
                pool[picked].counters.connectionStarted()
                policy.connectionOpened(to: pool[picked])
                picks += 1
            }
        }
        #expect(picks > 10_000)
    }

    @Test("retired backends are skipped, and picked again once restored")
    func retiredAndRestored() throws {
        let router = try makeRouter(weights: [1, 1, 1], policy: LeastConnectionsPolicy())
        self.hold(5, on: 1, in: router)
        self.hold(5, on: 2, in: router)
        router.pool[0].health.setRetired(true)
        for _ in 0..<5 {
            #expect(router.table.selector.pick(for: anyClient, excluding: .none) != 0)
        }
        router.pool[0].health.setRetired(false)
        #expect(router.table.selector.pick(for: anyClient, excluding: .none) == 0)
    }

    @Test("a closed connection re-sorts its backend at once")
    func closeResorts() throws {
        let policy = LeastConnectionsPolicy()
        let router = try makeRouter(weights: [1, 1], policy: policy)
        self.hold(3, on: 0, in: router)
        self.hold(2, on: 1, in: router)
        #expect(router.table.selector.pick(for: anyClient, excluding: .none) == 1)
        for _ in 0..<3 {
            router.pool[0].counters.connectionEnded()
            policy.connectionClosed(to: router.pool[0])
        }
        #expect(router.table.selector.pick(for: anyClient, excluding: .none) == 0)
    }
}
