import LBKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The health checker on an `EmbeddedEventLoop`: its clock is the loop's, advanced by the test, and
/// its probes are the test's. No socket, no sleep.
@Suite("Health checker")
struct HealthCheckerTests {
    /// Picks the first backend not excluded.
    final class FirstBackend: LoadBalancingPolicy {
        let name = "first"
        func makeSelector(for pool: BackendPool) -> any BackendSelector { Selector(count: pool.count) }
        struct Selector: BackendSelector {
            let count: Int
            func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? {
                (0..<self.count).first { !excluded.contains($0) }
            }
        }
    }

    let dead = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 7001))
    let alive = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 7002))
    /// No jitter: probes fall exactly on the intervals.
    let settings = HealthSettings(probeInterval: .seconds(1), probeMaximumInterval: .seconds(8), jitter: { $0 })

    /// A checker of a router with the dead and the alive backend, on `loop`, probing with `probe`.
    func checker(
        on loop: EmbeddedEventLoop,
        events: (@Sendable (HealthEvent) -> Void)? = nil,
        probe: @escaping HealthChecker.Probe
    ) throws -> (HealthChecker, Router) {
        let router = Router(policy: FirstBackend())
        try router.setPool([self.dead, self.alive])
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let checker = HealthChecker(
            router: router,
            settings: self.settings,
            loop: loop,
            instance: "test",
            logger: logger,
            events: events,
            probe: probe
        )
        loop.run()
        return (checker, router)
    }

    @Test("a removed backend is reported as backend-removed and never probed again")
    func removal() throws {
        let loop = EmbeddedEventLoop()
        let events = NIOLockedValueBox<[HealthEvent]>([])
        let probes = NIOLockedValueBox<[SocketAddress]>([])
        let (checker, router) = try self.checker(
            on: loop,
            events: { event in events.withLockedValue { $0.append(event) } },
            probe: { address, loop, _ in
                probes.withLockedValue { $0.append(address) }
                return loop.makeFailedFuture(ProbeRefused())
            }
        )

        checker.connectFailed(router.pool.backends[0], kind: .refused)
        loop.run()
        #expect(events.withLockedValue { $0.map(\.state) } == [.retired])
        #expect(router.pool.backends[0].isRetired)

        // Probed after 1 s, then after 2 s more (the interval doubles on failure).
        loop.advanceTime(by: .seconds(1))
        #expect(probes.withLockedValue { $0.count } == 1)
        loop.advanceTime(by: .seconds(2))
        #expect(probes.withLockedValue { $0.count } == 2)

        try router.setPool([self.alive])
        loop.run()
        let removal = try #require(events.withLockedValue { $0.last })
        #expect(removal.state == .removed)
        #expect(removal.backend == self.dead.address)
        #expect(removal.json.contains(#""event":"backend-removed""#))

        // Far past every interval: no probe of the removed backend, nor of the healthy one.
        loop.advanceTime(by: .seconds(600))
        #expect(probes.withLockedValue { $0.count } == 2)
        #expect(events.withLockedValue { $0.count } == 2)
        try loop.syncShutdownGracefully()
    }

    @Test("--rise successful probes restore a retired backend, on the loop's clock")
    func restoration() throws {
        let loop = EmbeddedEventLoop()
        let answering = NIOLockedValueBox(false)
        let (checker, router) = try self.checker(on: loop) { _, loop, _ in
            answering.withLockedValue { $0 } ? loop.makeSucceededVoidFuture() : loop.makeFailedFuture(ProbeRefused())
        }
        checker.connectFailed(router.pool.backends[0], kind: .refused)
        loop.run()
        #expect(router.pool.backends[0].isRetired)
        answering.withLockedValue { $0 = true }
        loop.advanceTime(by: .seconds(1))
        #expect(router.pool.backends[0].isRetired)  // one success of two
        loop.advanceTime(by: .seconds(1))
        #expect(!router.pool.backends[0].isRetired)
        try loop.syncShutdownGracefully()
    }

    @Test("a probe that cannot get a socket (EMFILE, no free port) charges the backend nothing")
    func localShortage() throws {
        let loop = EmbeddedEventLoop()
        let failure = NIOLockedValueBox<any Error>(IOError(errnoCode: EMFILE, reason: "socket"))
        let probes = NIOLockedValueBox(0)
        let router = Router(policy: FirstBackend())
        try router.setPool([self.alive])
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let checker = HealthChecker(
            router: router,
            settings: HealthSettings(probeInterval: .seconds(1), checkInterval: .seconds(1), jitter: { $0 }),
            loop: loop,
            instance: "test",
            logger: logger,
            probe: { _, loop, _ in
                probes.withLockedValue { $0 += 1 }
                return loop.makeFailedFuture(failure.withLockedValue { $0 })
            }
        )
        loop.run()
        for code in [EMFILE, ENFILE, EADDRNOTAVAIL, EADDRINUSE] {
            failure.withLockedValue { $0 = IOError(errnoCode: code, reason: "connect") }
            loop.advanceTime(by: .seconds(5))
        }
        #expect(probes.withLockedValue { $0 } >= 15)
        #expect(!router.pool.backends[0].isRetired)
        // A refusal is the backend's own: --fall (3) of them retire it.
        failure.withLockedValue { $0 = IOError(errnoCode: ECONNREFUSED, reason: "connect") }
        loop.advanceTime(by: .seconds(3))
        #expect(router.pool.backends[0].isRetired)
        _ = checker
        try loop.syncShutdownGracefully()
    }

    struct ProbeRefused: Error {}
}
