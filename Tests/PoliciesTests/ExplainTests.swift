import LBKit
import Testing

@testable import LBKit
@testable import Policies

/// Every built-in policy explains a pick without making it: the explanation names the backend the
/// next pick would give, and asking does not change what that is.
@Suite("Explaining picks")
struct ExplainTests {
    let client = ClientAddress(family: .ipv4, bytes: [198, 51, 100, 7], port: 40_000)

    @Test("round-robin: its position and weights; explaining does not advance the rotation")
    func roundRobin() throws {
        let router = try makeRouter(weights: [2, 1], policy: RoundRobinPolicy())
        for _ in 0..<5 {
            let explained = router.table.selector.explain(for: self.client, excluding: .none)
            #expect(explained.steps[0] == "schedule of 3 turns over 2 backends (weights 2, 1)")
            let again = router.table.selector.explain(for: self.client, excluding: .none)
            #expect(again == explained)
            #expect(router.table.selector.pick(for: self.client, excluding: .none) == explained.backend)
        }
        router.pool.backends[0].health.setRetired(true)
        defer { router.pool.backends[0].health.setRetired(false) }
        let skipping = router.table.selector.explain(for: self.client, excluding: .none)
        #expect(skipping.backend == 1)
        #expect(skipping.steps.last == "round-robin: 127.0.0.1:9002 (weight 1)")
        #expect(router.table.selector.pick(for: self.client, excluding: .none) == 1)
    }

    @Test("least-connections: the loads it compared, and the least loaded")
    func leastConnections() throws {
        let router = try makeRouter(weights: [1, 2, 1], policy: LeastConnectionsPolicy())
        let pool = router.pool
        for _ in 0..<3 { pool[0].counters.connectionStarted() }
        for _ in 0..<3 { pool[1].counters.connectionStarted() }
        for _ in 0..<2 { pool[2].counters.connectionStarted() }
        let explained = router.table.selector.explain(for: self.client, excluding: .none)
        #expect(explained.backend == 1)
        #expect(explained.steps.last == "least loaded: 127.0.0.1:9002 (3 open)")
        #expect(
            explained.steps[1].hasPrefix("loads: 127.0.0.1:9002 3 open / weight 2, 127.0.0.1:9003 2 open / weight 1")
        )
        #expect(router.table.selector.pick(for: self.client, excluding: .none) == explained.backend)

        // Ties: the explanation names the backend longest in the queue, as each pick then takes it.
        let tied = try makeRouter(weights: [1, 1, 1], policy: LeastConnectionsPolicy())
        for _ in 0..<6 {
            let named = tied.table.selector.explain(for: self.client, excluding: .none)
            #expect(named.steps.contains("3 tied: the one longest in the queue wins"))
            #expect(tied.table.selector.pick(for: self.client, excluding: .none) == named.backend)
        }
    }

    @Test("maglev: the slot, the preference order, and the next preference past a retired backend")
    func maglev() throws {
        let router = try makeRouter(weights: [1, 1, 1, 1], policy: MaglevPolicy())
        let selector = router.table.selector
        let explained = selector.explain(for: self.client, excluding: .none)
        #expect(explained.backend == selector.pick(for: self.client, excluding: .none))
        #expect(explained.steps[0].hasPrefix("hash of 198.51.100.7:40000 (address only) -> slot "))
        let order = try #require(explained.steps.first { $0.hasPrefix("preference order: ") })
        let preferred = order.dropFirst("preference order: ".count).split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        #expect(preferred.count == 3)
        let first = try #require(explained.backend)
        #expect(preferred[0] == router.pool[first].address.description)

        router.pool[first].health.setRetired(true)
        defer { router.pool[first].health.setRetired(false) }
        let failedOver = selector.explain(for: self.client, excluding: .none)
        #expect(failedOver.steps.contains("\(router.pool[first].address) skipped (retired)"))
        #expect(failedOver.backend.map { router.pool[$0].address.description } == preferred[1])
        #expect(failedOver.backend == selector.pick(for: self.client, excluding: .none))
    }
}
