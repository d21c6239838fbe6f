import LBKit
import NIOCore
import Testing

@testable import l4lb

/// Backends that refuse or never answer: the client is retried elsewhere and never sees a failure.
@Suite("Failed connects are retried")
struct BackendFailureTests {
    @Test("a dead backend (connection refused) is skipped with no client failure")
    func refusedBackendIsSkipped() async throws {
        try await withTestResources { r in
            let alive = try await r.greeters(["a", "b"])
            let reservation = PortReservation()
            let dead = reservation.spec
            let proxy = try await r.l4lb(backends: [alive[0].spec, dead, alive[1].spec])

            var counts: [String: Int] = [:]
            for _ in 0..<30 {
                counts[try BlockingClient.greeting(port: proxy.port), default: 0] += 1
            }
            // The dead backend's turns go to the living: neither of them is starved.
            #expect(Set(counts.keys) == ["a", "b"])
            #expect(counts.values.allSatisfy { $0 >= 10 }, "got: \(counts)")
            let deadBackend = try #require(proxy.router.pool.backends.first { $0.address == dead.address })
            // A refused connect is certain: the first one retires it, so later clients do not try it.
            #expect((1...3).contains(deadBackend.counters.connectFailures))
            #expect(deadBackend.isRetired)
            withExtendedLifetime(reservation) {}
            #expect(deadBackend.activeConnections == 0)
        }
    }

    @Test("a backend that never answers (accept queue full) times out and the client goes elsewhere")
    func connectTimeout() async throws {
        try await withTestResources { r in
            let alive = try await r.backend(.greet("a"))
            let blackhole = BlackholeListener()
            let silent = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: blackhole.port))
            let proxy = try await r.l4lb(backends: [silent, alive.spec], ["--connect-timeout", "200ms"])

            for _ in 0..<4 {
                #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            }
            let silentBackend = try #require(proxy.router.pool.backends.first { $0.address == silent.address })
            #expect(silentBackend.counters.connectFailures >= 2)
            withExtendedLifetime(blackhole) {}
        }
    }

    @Test("when every attempt fails the client is closed, and l4lb keeps serving")
    func allAttemptsFail() async throws {
        try await withTestResources { r in
            let reservations = (0..<3).map { _ in PortReservation() }
            let dead = reservations.map(\.spec)
            let proxy = try await r.l4lb(backends: dead, ["--connect-attempts", "2"])

            let client = try BlockingClient(port: proxy.port)
            #expect(try client.readLine() == nil)
            let failures = proxy.router.pool.backends.map(\.counters.connectFailures).reduce(0, +)
            #expect(failures == 2)

            let alive = try await r.backend(.greet("a"))
            try proxy.router.setPool([dead[0], alive.spec])
            for _ in 0..<4 {
                #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            }
            withExtendedLifetime(reservations) {}
        }
    }

    @Test("an empty pool refuses clients without crashing")
    func emptyPool() async throws {
        try await withTestResources { r in
            let proxy = try await r.l4lb(backends: [])
            let client = try BlockingClient(port: proxy.port)
            #expect(try client.readLine() == nil)
        }
    }
}
