import Foundation
import LBKit
import NIOConcurrencyHelpers
import Testing

/// Backends killed and restarted during the test: retired at once, back by themselves, and no
/// client sees the difference while some backend is alive.
@Suite("Backend health")
struct HealthTests {
    /// Fast probing so that the tests run in a second or two; the logic is the same at any speed.
    static func fastHealth(_ configuration: inout ProxyConfiguration) {
        configuration.health.probeInterval = .milliseconds(100)
        configuration.health.probeMaximumInterval = .milliseconds(400)
        configuration.health.probeTimeout = .milliseconds(300)
        configuration.connectTimeout = .milliseconds(300)
    }

    @Test(
        "a backend killed while clients connect in a loop: every client succeeds, the backend is retired, and once restarted it is back within probe interval x rise"
    )
    func killAndRestart() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.proxy(backends: backends.map(\.spec), configure: Self.fastHealth)
            let deadPort = backends[0].port

            var served: [String] = []
            var reservation: PortReservation?
            for index in 0..<40 {
                if index == 10 { reservation = try await backends[0].kill() }
                served.append(try BlockingClient.greeting(port: proxy.port))
            }
            #expect(served.count == 40)
            #expect(served.suffix(20).allSatisfy { $0 == "b" })
            let dead = try #require(proxy.router.pool.backends.first { $0.address.port == deadPort })
            #expect(await eventually { dead.isRetired })

            // The backend takes the port over from the reservation, with no moment it is free.
            _ = try await r.backend(.greet("a"), port: deadPort)
            reservation?.release()
            // Probe interval 100 ms (backed off to at most 400 ms) x rise 2, plus a margin.
            #expect(await eventually(timeoutSeconds: 3) { !dead.isRetired })
            var after = Set<String>()
            for _ in 0..<6 { after.insert(try BlockingClient.greeting(port: proxy.port)) }
            #expect(after == ["a", "b"])
        }
    }

    @Test("a backend that never answers: connect timeout, retired, clients served elsewhere")
    func neverAnswers() async throws {
        try await withTestResources { r in
            let alive = try await r.backend(.greet("a"))
            let blackhole = BlackholeListener()
            let silent = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: blackhole.port))
            let proxy = try await r.proxy(backends: [silent, alive.spec]) { configuration in
                Self.fastHealth(&configuration)
                configuration.connectTimeout = .milliseconds(200)
                configuration.health.retireAfter = 1
            }
            for _ in 0..<6 {
                #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            }
            let silentBackend = try #require(proxy.router.pool.backends.first { $0.address == silent.address })
            #expect(silentBackend.isRetired)
            // Retired after the first timeout: later clients were not made to wait for it again.
            #expect(silentBackend.counters.connectFailures <= 2)
            withExtendedLifetime(blackhole) {}
        }
    }

    @Test(
        "a backend that accepts and resets before sending a byte: every client is moved to another backend, and it is retired"
    )
    func resetBeforeFirstByte() async throws {
        try await withTestResources { r in
            let resetter = try await r.backend(.resetOnAccept)
            let alive = try await r.backend(.greet("a"))
            let proxy = try await r.proxy(backends: [resetter.spec, alive.spec]) { configuration in
                Self.fastHealth(&configuration)
                configuration.health.retireAfter = 2
            }
            let resetBackend = try #require(proxy.router.pool.backends.first { $0.address.port == resetter.port })
            for index in 0..<8 {
                if index.isMultiple(of: 2) {
                    #expect(try BlockingClient.greeting(port: proxy.port) == "a")
                } else {
                    // Bytes sent at once are pending when l4lb connects, and its first write may
                    // meet the reset: they still reach the other backend, which echoes them.
                    let client = try BlockingClient(port: proxy.port)
                    try client.send("hello \(index)\n")
                    #expect(try client.readLine() == "a")
                    #expect(try client.readLine() == "hello \(index)")
                }
            }
            #expect(resetter.acceptedCount >= 1)
            #expect(await eventually { resetBackend.isRetired })
            #expect(resetBackend.counters.connectFailures >= 2)
        }
    }

    @Test(
        "a backend that takes a request in and resets: the request is replayed, EOF included, to another backend"
    )
    func resetAfterReadingReplays() async throws {
        try await withTestResources { r in
            let crasher = try await r.backend(.resetAfterReading(3000))
            let answerer = try await r.backend(.answerAfterEOF("b"))
            let directory = try PluginFixtures.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let log = AccessLog(path: "\(directory)/access.log", format: .logfmt)
            // Round-robin starts with the first backend: the first client meets the crasher.
            let proxy = try await r.proxy(
                backends: [crasher.spec, answerer.spec],
                configure: Self.fastHealth,
                accessLog: log
            )
            let client = try BlockingClient(port: proxy.port)
            try client.send([UInt8](repeating: 7, count: 3000))
            client.shutdownWrite()
            #expect(try client.readLine() == "b received 3000 bytes")
            #expect(crasher.bytesReceived.load(ordering: .relaxed) >= 3000)
            #expect(client.waitForClose(timeoutSeconds: 5))
            #expect(await eventually { proxy.server.activeConnections == 0 })
            log.close()
            // One line, for the backend that served the client, with the retry counted.
            let lines = try String(contentsOfFile: "\(directory)/access.log", encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 1)
            #expect(lines.first?.contains("backend=127.0.0.1:\(answerer.port) bytes_from_client=3000 ") == true)
            #expect(lines.first?.hasSuffix(" retries=1") == true, "got: \(lines)")
        }
    }

    @Test(
        "no replay when the client sent more than can be kept, or with retryOnReset off: the client is closed, l4lb serves on"
    )
    func resetWithoutReplay() async throws {
        try await withTestResources { r in
            for tooMuchToKeep in [true, false] {
                let crasher = try await r.backend(.resetAfterReading(4096))
                let answerer = try await r.backend(.answerAfterEOF("b"))
                let proxy = try await r.proxy(backends: [crasher.spec, answerer.spec]) { configuration in
                    Self.fastHealth(&configuration)
                    if tooMuchToKeep {
                        configuration.maxPendingBytes = 1024
                    } else {
                        configuration.retryOnReset = false
                    }
                }
                let client = try BlockingClient(port: proxy.port, timeoutSeconds: 5)
                try client.send([UInt8](repeating: 7, count: 4096))
                client.shutdownWrite()
                #expect(client.waitForClose(timeoutSeconds: 5))
                #expect(answerer.acceptedCount == 0)
                #expect(crasher.bytesReceived.load(ordering: .relaxed) >= 4096)
                // The crasher is retired after its reset; the next client goes to the other backend.
                let next = try BlockingClient(port: proxy.port)
                next.shutdownWrite()
                #expect(try next.readLine() == "b received 0 bytes")
            }
        }
    }

    @Test("all backends dead: panic mode tries them all; one comes back: normal again")
    func panicMode() async throws {
        try await withTestResources { r in
            let reservations = [PortReservation(), PortReservation()]
            let ports = reservations.map(\.port)
            let specs = ports.map { BackendSpec(address: HostAndPort(host: "127.0.0.1", port: $0)) }
            let proxy = try await r.proxy(backends: specs, configure: Self.fastHealth)

            #expect(try BlockingClient(port: proxy.port).readLine() == nil)
            #expect(await eventually { proxy.router.panic.isOn })
            #expect(proxy.router.pool.backends.allSatisfy { $0.isRetired })
            // In panic mode retired backends are still tried: a client that arrives when one is back
            // gets through even before the probes restore it.
            _ = try await r.backend(.greet("back"), port: ports[1])
            reservations[1].release()
            #expect(try BlockingClient.greeting(port: proxy.port) == "back")
            #expect(await eventually(timeoutSeconds: 3) { !proxy.router.panic.isOn })
            #expect(!proxy.router.pool.backends[1].isRetired)
            #expect(proxy.router.pool.backends[0].isRetired)
            for _ in 0..<4 {
                #expect(try BlockingClient.greeting(port: proxy.port) == "back")
            }
        }
    }

    @Test("removeServer of a retired backend: no more probes, no comeback; events and status are published")
    func removeRetiredBackend() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let alive = try await r.backend(.greet("a"))
            let reservation = PortReservation()
            let deadPort = reservation.port
            let dead = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: deadPort))
            // Wired as the executable wires it: health events go out through the control plane.
            let publisher = NIOLockedValueBox<ControlPlane?>(nil)
            let proxy = try await r.proxy(
                backends: [dead, alive.spec],
                configure: Self.fastHealth,
                healthEvents: { event in publisher.withLockedValue { $0 }?.publishEvent(event.json) }
            )
            let controlPlane = await r.controlPlane(for: proxy, redis: redis)
            publisher.withLockedValue { $0 = controlPlane }
            let observer = try redis.client()
            try observer.send(["SUBSCRIBE", "events"])
            _ = try observer.nextReply(waitingUpTo: 2_000)  // the subscribe confirmation

            for _ in 0..<3 {
                #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            }
            #expect(await eventually { proxy.router.pool.backends[0].isRetired })
            let published = try #require(try observer.nextReply(waitingUpTo: 3_000))
            guard case .array(let parts) = published, parts.count == 3, let json = parts[2].text else {
                Issue.record("unexpected reply on events: \(published)")
                return
            }
            #expect(json.contains(#""event":"backend-retired""#))
            #expect(json.contains(#""backend":"127.0.0.1:\#(deadPort)""#))

            let client = try redis.client()
            let router = proxy.router
            let startedAt = Date()
            controlPlane.reportStatus(instance: "test-1") {
                InstanceStatus.json(instance: "test-1", startedAt: startedAt, router: router, redisConnected: true)
            }
            #expect(
                await eventually {
                    (try? client.command(["GET", "status:test-1"]))?.text?.contains(#""state":"retired""#) == true
                }
            )
            guard case .integer(let ttl) = try client.command(["TTL", "status:test-1"]) else {
                Issue.record("status key has no TTL")
                return
            }
            #expect((1...15).contains(ttl))

            try client.publish("removeServer", "127.0.0.1:\(deadPort)")
            #expect(await eventually { proxy.poolPorts == [alive.port] })
            #expect(await eventuallyAsync { await proxy.server.health.states()[dead.address] == nil })
            let probes = proxy.server.health.probesStarted
            try await Task.sleep(nanoseconds: 600_000_000)
            #expect(proxy.server.health.probesStarted == probes)
            _ = try await r.backend(.greet("revived"), port: deadPort)
            reservation.release()
            try await Task.sleep(nanoseconds: 500_000_000)
            #expect(proxy.poolPorts == [alive.port])
            #expect(try BlockingClient.greeting(port: proxy.port) == "a")
        }
    }

    @Test("addServer of a retired backend does not duplicate it or clear its retirement")
    func addRetiredBackend() async throws {
        try await withTestResources { r in
            let alive = try await r.backend(.greet("a"))
            let reservation = PortReservation()
            let dead = reservation.spec
            let proxy = try await r.proxy(backends: [dead, alive.spec], configure: Self.fastHealth)
            for _ in 0..<3 { _ = try BlockingClient.greeting(port: proxy.port) }
            #expect(await eventually { proxy.router.pool.backends[0].isRetired })
            let message = ControlMessage.addServer(dead)
            #expect(message.applied(to: proxy.router.pool.specs) == nil)
            try proxy.router.setPool(proxy.router.pool.specs + [dead])
            #expect(proxy.router.pool.count == 2)
            #expect(proxy.router.pool.backends[0].isRetired)
            withExtendedLifetime(reservation) {}
        }
    }
}
