import Foundation
import LBControlPlane
import LBKit
import NIOConcurrencyHelpers
import Testing

@testable import l4lb

/// Backends killed and restarted during the test: retired at once, back by themselves, and no
/// client sees the difference while some backend is alive.
@Suite("Backend health")
struct HealthTests {
    /// Fast probing so that the tests run in a second or two; the logic is the same at any speed.
    /// (The probe timeout is the connect timeout.)
    static let fastHealth = [
        "--probe-interval", "100ms", "--probe-max-interval", "400ms", "--connect-timeout", "300ms",
    ]

    @Test(
        "a backend killed while clients connect in a loop: every client succeeds, the backend is retired, and once restarted it is back within probe interval x rise"
    )
    func killAndRestart() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: backends.map(\.spec), Self.fastHealth)
            let deadPort = backends[0].port

            var served: [String] = []
            var reservation: PortReservation?
            for index in 0..<40 {
                if index == 10 { reservation = try await backends[0].kill() }
                served.append(try BlockingClient.greeting(port: proxy.port))
            }
            // Round-robin shares the first ten; from the kill on, every client lands on b, the
            // ones that were sent to a's refused port included.
            #expect(served.prefix(10).filter { $0 == "a" }.count == 5)
            #expect(served[10...].allSatisfy { $0 == "b" }, "got: \(served)")
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
            let proxy = try await r.l4lb(
                backends: [silent, alive.spec],
                Self.fastHealth + ["--connect-timeout", "200ms", "--retire-after", "1"]
            )
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
            let proxy = try await r.l4lb(
                backends: [resetter.spec, alive.spec],
                Self.fastHealth + ["--retire-after", "2"]
            )
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
            let logPath = "\(directory)/access.log"
            // Round-robin starts with the first backend: the first client meets the crasher.
            let proxy = try await r.l4lb(
                backends: [crasher.spec, answerer.spec],
                Self.fastHealth + ["--access-log", logPath]
            )
            let client = try BlockingClient(port: proxy.port)
            try client.send([UInt8](repeating: 7, count: 3000))
            client.shutdownWrite()
            #expect(try client.readLine() == "b received 3000 bytes")
            #expect(crasher.bytesReceived.load(ordering: .relaxed) >= 3000)
            #expect(client.waitForClose(timeoutSeconds: 5))
            #expect(await eventually { proxy.proxy.activeConnections == 0 })
            // One line, for the backend that served the client, with the retry counted.
            var lines: [Substring] = []
            #expect(
                await eventually {
                    lines = (try? String(contentsOfFile: logPath, encoding: .utf8))?.split(separator: "\n") ?? []
                    return !lines.isEmpty
                }
            )
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
                // No flag sets how much is kept: 256 KiB, lowered here so that 4 KiB is too much.
                let proxy = try await r.l4lb(
                    backends: [crasher.spec, answerer.spec],
                    Self.fastHealth + (tooMuchToKeep ? [] : ["--no-retry-on-reset"])
                ) { settings in
                    if tooMuchToKeep { settings.proxy.maxPendingBytes = 1024 }
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
            let proxy = try await r.l4lb(backends: specs, Self.fastHealth)

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

    @Test(
        "removeServer of a retired backend: it is forgotten, and the retirement, the removal and the status are published"
    )
    func removeRetiredBackend() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let alive = try await r.backend(.greet("a"))
            let reservation = PortReservation()
            let deadPort = reservation.port
            let dead = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: deadPort))
            let proxy = try await r.l4lb(
                backends: [dead, alive.spec],
                redis: redis,
                Self.fastHealth + ["--instance-id", "test-1"]
            )
            let observer = try redis.client()
            try observer.send(["SUBSCRIBE", "events"])
            _ = try observer.nextReply(waitingUpTo: 2_000)  // the subscribe confirmation

            for _ in 0..<3 {
                #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            }
            #expect(await eventually { proxy.router.pool.backends[0].isRetired })
            let json = try Self.nextEvent(observer)
            #expect(json.contains(#""event":"backend-retired""#))
            #expect(json.contains(#""backend":"127.0.0.1:\#(deadPort)""#))

            let client = try redis.client()
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
            // The removal is published, and the checker forgets the backend: nothing is left to
            // probe it (HealthCheckerTests shows, on a clock of its own, that no probe follows).
            let removalJSON = try Self.nextEvent(observer)
            #expect(removalJSON.contains(#""event":"backend-removed""#))
            #expect(removalJSON.contains(#""backend":"127.0.0.1:\#(deadPort)""#))
            #expect(await proxy.proxy.health.states()[dead.address] == nil)
            #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            withExtendedLifetime(reservation) {}
        }
    }

    /// The next message on the `events` channel `observer` subscribes to, as its JSON text.
    static func nextEvent(_ observer: RedisConnection) throws -> String {
        let reply = try #require(try observer.nextReply(waitingUpTo: 3_000))
        guard case .array(let parts) = reply, parts.count == 3, let json = parts[2].text else {
            throw TestFailure("unexpected reply on events: \(reply)")
        }
        return json
    }

    @Test("addServer of a retired backend does not duplicate it or clear its retirement")
    func addRetiredBackend() async throws {
        try await withTestResources { r in
            let alive = try await r.backend(.greet("a"))
            let reservation = PortReservation()
            let dead = reservation.spec
            let proxy = try await r.l4lb(backends: [dead, alive.spec], Self.fastHealth)
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
