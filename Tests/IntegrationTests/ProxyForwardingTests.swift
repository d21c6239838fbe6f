import Foundation
import LBKit
import NIOCore
import NIOPosix
import Policies
import Testing

@testable import l4lb

/// End to end through the real data plane: real backends, real clients, all on 127.0.0.1.
@Suite("Forwarding through l4lb")
struct ProxyForwardingTests {
    @Test("round-robin rotates exactly over many connections")
    func roundRobinRotation() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b", "c"])
            let proxy = try await r.l4lb(backends: backends.map(\.spec))

            var seen: [String] = []
            for _ in 0..<60 {
                seen.append(try BlockingClient.greeting(port: proxy.port))
            }
            let first = try #require(seen.first)
            let start = try #require(["a", "b", "c"].firstIndex(of: first))
            let expected = (0..<60).map { ["a", "b", "c"][(start + $0) % 3] }
            #expect(seen == expected)
        }
    }

    @Test("weights are respected: 1, 2, 3 gives 10, 20, 30 of 60")
    func weightedRoundRobin() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b", "c"])
            let specs = zip(backends, [1, 2, 3]).map { $0.spec(weight: $1) }
            let proxy = try await r.l4lb(backends: specs)

            var counts: [String: Int] = [:]
            for _ in 0..<60 {
                counts[try BlockingClient.greeting(port: proxy.port), default: 0] += 1
            }
            #expect(counts == ["a": 10, "b": 20, "c": 30])
        }
    }

    @Test("least-connections sends a new client to the backend with the fewest open connections")
    func leastConnections() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b", "c"])
            let proxy = try await r.l4lb(backends: backends.map(\.spec), ["--policy", "least-connections"])

            // Three held connections spread one per backend.
            var held: [String: BlockingClient] = [:]
            for _ in 0..<3 {
                let client = try BlockingClient(port: proxy.port)
                held[try #require(try client.readLine())] = client
            }
            #expect(Set(held.keys) == ["a", "b", "c"])

            // Two more on top: a, b and c now hold 1 + x each; close the one on "b" and every new client
            // must land on "b" until it is level again.
            held["b"] = nil
            let bBackend = backends[1]
            #expect(await eventually { proxy.activeConnections(bBackend) == 0 })
            let next = try BlockingClient(port: proxy.port)
            #expect(try next.readLine() == "b")

            // Load a and c more: a 1 -> 3, c 1 -> 2 by holding extra connections; b holds 1 (next).
            // Least-connections must now prefer b, then c.
            var extra: [BlockingClient] = []
            for _ in 0..<3 {
                let client = try BlockingClient(port: proxy.port)
                _ = try client.readLine()
                extra.append(client)
            }
            // After 3 more picks from (a1, b1, c1) every backend holds 2.
            for backend in backends {
                #expect(proxy.activeConnections(backend) == 2)
            }
            withExtendedLifetime((held, next, extra)) {}
        }
    }

    @Test("16 MiB each way is relayed byte-exact")
    func bulkTransferIsExact() async throws {
        try await withTestResources { r in
            let echo = try await r.backend(.echo)
            let proxy = try await r.l4lb(backends: [echo.spec])

            let payload = randomBytes(16 << 20)
            let client = try BlockingClient(port: proxy.port)
            let sender = Thread {
                try? client.send(payload)
                client.shutdownWrite()
            }
            sender.start()
            let received = try client.readToEnd(limit: 32 << 20)
            #expect(received.count == payload.count)
            #expect(checksum(received) == checksum(payload))
            #expect(received == payload)
        }
    }

    @Test("half-close: a client that shuts down its write side still gets the whole response")
    func halfClose() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.answerAfterEOF("a"))
            let proxy = try await r.l4lb(backends: [backend.spec])

            let client = try BlockingClient(port: proxy.port)
            try client.send(String(repeating: "x", count: 100_000))
            client.shutdownWrite()
            let answer = String(decoding: try client.readToEnd(), as: UTF8.self)
            #expect(answer == "a received 100000 bytes\n")
        }
    }

    @Test("half-close from the backend: its FIN reaches a client that stays open, whose later bytes still arrive")
    func backendHalfClose() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greetAndHalfClose("b"))
            let proxy = try await r.l4lb(backends: [backend.spec])

            let client = try BlockingClient(port: proxy.port)
            // The client has not closed: the EOF it reads is the backend's FIN, passed on by l4lb (a
            // FIN never passed on would end this read with the client's receive timeout instead).
            #expect(String(decoding: try client.readToEnd(), as: UTF8.self) == "b\n")
            try client.send(String(repeating: "y", count: 5_000))
            client.shutdownWrite()
            #expect(await eventually { backend.bytesReceived.load(ordering: .relaxed) == 5_000 })
        }
    }

    @Test("bytes sent before the backend connection is up are forwarded, not dropped")
    func earlyBytesAreKept() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.answerAfterEOF("a"))
            // A first backend that never answers delays the real connect by the connect timeout.
            let blackhole = BlackholeListener()
            let directory = try PluginFixtures.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let logPath = "\(directory)/access.log"
            let proxy = try await r.l4lb(
                backends: [BackendSpec(address: HostAndPort(host: "127.0.0.1", port: blackhole.port)), backend.spec],
                ["--connect-timeout", "300ms", "--access-log", logPath]
            )

            let client = try BlockingClient(port: proxy.port)
            try client.send("early bytes")
            client.shutdownWrite()
            let answer = String(decoding: try client.readToEnd(), as: UTF8.self)
            #expect(answer == "a received 11 bytes\n")
            // The bytes and the EOF that waited for the backend are accounted for like any others.
            #expect(await eventually { proxy.proxy.activeConnections == 0 })
            var line = ""
            #expect(
                await eventually {
                    line = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                    return line.hasSuffix("\n")
                }
            )
            #expect(line.contains("bytes_from_client=11 "))
            #expect(line.contains("reason=client-closed"))
            let counted = proxy.router.pool.backends[1].counters.bytesFromClients
            #expect(counted == 11)
            withExtendedLifetime(blackhole) {}
        }
    }

    @Test("IPv6 listener and backend")
    func ipv6() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("v6"), host: "::1")
            let proxy = try await r.l4lb(
                backends: [BackendSpec(address: HostAndPort(host: "::1", port: backend.port))],
                ["--listen", "[::1]:0"]
            )
            #expect(try BlockingClient.greeting(port: proxy.port, host: "::1") == "v6")
        }
    }

    @Test("--max-connections: past the limit clients wait in the listen queue and are served when a slot frees")
    func maxConnections() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            let proxy = try await r.l4lb(backends: [backend.spec], ["--max-connections", "2"])

            var first: BlockingClient? = try BlockingClient(port: proxy.port)
            let second = try BlockingClient(port: proxy.port)
            #expect(try first?.readLine() == "a")
            #expect(try second.readLine() == "a")
            // The kernel completes the third handshake, but l4lb does not accept it yet.
            let third = try BlockingClient(port: proxy.port, timeoutSeconds: 1)
            #expect(throws: TestFailure.self) { try third.readLine() }
            #expect(proxy.proxy.activeConnections == 2)
            #expect(backend.acceptedCount == 2)
            first = nil
            let waiting = try BlockingClient(port: proxy.port, timeoutSeconds: 1)
            _ = waiting
            #expect(await eventually { backend.acceptedCount >= 3 })
            #expect(try third.readLine() == "a")
            #expect(proxy.proxy.activeConnections == 2)
            #expect(proxy.proxy.acceptPauses >= 1)
            withExtendedLifetime((first, second, waiting)) {}
        }
    }

    @Test("--idle-timeout closes a quiet connection, on both sides")
    func idleTimeout() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            let proxy = try await r.l4lb(backends: [backend.spec], ["--idle-timeout", "300ms"])

            let client = try BlockingClient(port: proxy.port)
            #expect(try client.readLine() == "a")
            #expect(client.waitForClose(timeoutSeconds: 5))
            #expect(await eventually { proxy.activeConnections(backend) == 0 })
        }
    }

}

/// FNV-1a over the bytes: enough to tell two 16 MiB streams apart.
func checksum(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
    }
    return hash
}

/// `count` random bytes, filled a word at a time (a byte at a time is slow in a debug build).
func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { raw in
        let words = raw.bindMemory(to: UInt64.self)
        for index in words.indices { words[index] = generator.next() }
    }
    return bytes
}
