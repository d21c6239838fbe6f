import Foundation
import LBKit
import LBOperations
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import l4lb

/// What operators watch: metrics, status, access log, PROXY protocol toward backends.
@Suite("Operations in process")
struct OperationsTests {
    @Test("/metrics parses as Prometheus text and its numbers match the traffic sent; /status and /healthz answer")
    func metricsMatchTraffic() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: backends.map(\.spec), ["--admin", "127.0.0.1:0"])
            let adminPort = try #require(proxy.adminAddress?.port)

            // Ten clients, each sends 100 bytes and reads its greeting plus the echo.
            for _ in 0..<10 {
                let client = try BlockingClient(port: proxy.port)
                _ = try client.readLine()
                try client.send([UInt8](repeating: 0x41, count: 99) + [0x0A])
                _ = try client.readLine()
            }
            #expect(await eventually { proxy.proxy.activeConnections == 0 })

            let (status, body) = try httpGet(port: adminPort, path: "/metrics")
            #expect(status == 200)
            let metrics = try PrometheusText(body)
            #expect(metrics.types["l4lb_connections_accepted_total"] == "counter")
            #expect(metrics.types["l4lb_backend_connections_active"] == "gauge")
            #expect(metrics.value("l4lb_connections_accepted_total") == 10)
            #expect(metrics.value("l4lb_connections_active") == 0)
            #expect(metrics.value("l4lb_connections_closed_total", ["reason": "client-closed"]) == 10)
            #expect(metrics.value("l4lb_connections_closed_total", ["reason": "no-backend"]) == 0)
            #expect(metrics.value("l4lb_policy_picks_total", ["policy": "round-robin"]) == 10)
            var fromClients = 0.0
            var toClients = 0.0
            for backend in backends {
                let labels = ["backend": "127.0.0.1:\(backend.port)"]
                #expect(metrics.value("l4lb_backend_connections_total", labels) == 5)
                #expect(metrics.value("l4lb_backend_up", labels) == 1)
                fromClients += metrics.value("l4lb_backend_bytes_from_clients_total", labels) ?? -1
                toClients += metrics.value("l4lb_backend_bytes_to_clients_total", labels) ?? -1
            }
            #expect(fromClients == 1000)
            #expect(toClients == 1000 + 10 * 2)  // the echoes plus "a\n" / "b\n" greetings

            let statusReply = try httpGet(port: adminPort, path: "/status")
            let object = try JSONSerialization.jsonObject(with: Data(statusReply.body.utf8)) as? [String: Any]
            #expect((object?["backends"] as? [[String: Any]])?.count == 2)
            #expect(object?["policy"] as? String == "round-robin")
            #expect(try httpGet(port: adminPort, path: "/healthz").status == 200)
            #expect(try httpGet(port: adminPort, path: "/nope").status == 404)

            // Every backend retired: l4lb is in panic mode and says so.
            let dead = PortReservation()
            try proxy.router.setPool([dead.spec])
            #expect(try BlockingClient(port: proxy.port).readLine() == nil)
            #expect(await eventually { proxy.router.panic.isOn })
            let panic = try httpGet(port: adminPort, path: "/healthz")
            #expect(panic.status == 503)
            #expect(panic.body == "every backend is retired\n")
            try proxy.router.setPool([])
            let empty = try httpGet(port: adminPort, path: "/healthz")
            #expect(empty.status == 503)
            #expect(empty.body == "no backend in the pool\n")
            withExtendedLifetime(dead) {}
        }
    }

    @Test(
        "the access log has one line per closed connection with the right bytes, backend and reason",
        arguments: AccessLog.Format.allCases
    )
    func accessLog(format: AccessLog.Format) async throws {
        try await withTestResources { r in
            let directory = try PluginFixtures.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = "\(directory)/access.log"
            let backend = try await r.backend(.answerAfterEOF("a"))
            let dead = PortReservation()
            let proxy = try await r.l4lb(
                backends: [backend.spec],
                ["--access-log", path, "--access-log-format", format.rawValue]
            )
            for size in [10, 2000] {
                let client = try BlockingClient(port: proxy.port)
                try client.send([UInt8](repeating: 0x42, count: size))
                client.shutdownWrite()
                _ = try client.readToEnd()
            }
            try proxy.router.setPool([dead.spec])
            #expect(try BlockingClient(port: proxy.port).readLine() == nil)
            #expect(await eventually { proxy.proxy.activeConnections == 0 })

            var lines: [String] = []
            #expect(
                await eventually {
                    lines =
                        (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").map(String.init)
                        ?? []
                    return lines.count >= 3
                }
            )
            #expect(lines.count == 3)
            let backendName = "127.0.0.1:\(backend.port)"
            // Each line is written when its connection closes; two closes on two event loops may land
            // in either order, so lines are matched by size.
            func bytesFromClient(_ line: String) -> Int {
                let marker = format == .json ? "\"bytes_from_client\":" : "bytes_from_client="
                guard let range = line.range(of: marker) else { return -1 }
                return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? -1
            }
            let relayed = lines.prefix(2).sorted { bytesFromClient($0) < bytesFromClient($1) }
            #expect(relayed.allSatisfy { !$0.contains("no-backend") })
            for (line, size) in zip(relayed, [10, 2000]) {
                let answer = "a received \(size) bytes\n".utf8.count
                if format == .json {
                    let entry = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                    #expect(entry["backend"] as? String == backendName)
                    #expect(entry["bytes_from_client"] as? Int == size)
                    #expect(entry["bytes_from_backend"] as? Int == answer)
                    #expect(entry["reason"] as? String == "client-closed")
                    #expect(entry["retries"] as? Int == 0)
                    #expect((entry["client"] as? String)?.hasPrefix("127.0.0.1:") == true)
                    #expect(entry["duration_ms"] is Double)
                } else {
                    let fields = Dictionary(
                        uniqueKeysWithValues: line.split(separator: " ").map {
                            let pair = $0.split(separator: "=", maxSplits: 1)
                            return (String(pair[0]), String(pair[1]))
                        }
                    )
                    #expect(fields["backend"] == backendName)
                    #expect(fields["bytes_from_client"] == "\(size)")
                    #expect(fields["bytes_from_backend"] == "\(answer)")
                    #expect(fields["reason"] == "client-closed")
                    #expect(fields["retries"] == "0")
                }
            }
            #expect(lines[2].contains("no-backend"))
            withExtendedLifetime(dead) {}
        }
    }

    @Test(
        "--send-proxy-protocol v1 and v2: the backend parses the client's address",
        arguments: ProxyProtocolEncoder.Version.allCases
    )
    func sendProxyProtocol(version: ProxyProtocolEncoder.Version) async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.reportProxyHeader)
            let proxy = try await r.l4lb(backends: [backend.spec], ["--send-proxy-protocol", version.rawValue])
            let client = try BlockingClient(port: proxy.port)
            let localPort = try #require(TestSocketAddress.localPort(of: client.fd))
            try client.send("hello")
            let report = try #require(try client.readLine())
            if version == .v1 {
                #expect(report == "PROXY TCP4 127.0.0.1 127.0.0.1 \(localPort) \(proxy.port)")
            } else {
                #expect(report == "v2 127.0.0.1:\(localPort)")
            }
        }
    }

    @Test("PROXY headers received are passed on: a client known from its v2 header reaches the backend as itself")
    func proxyHeaderPassThrough() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.reportProxyHeader)
            let proxy = try await r.l4lb(
                backends: [backend.spec],
                ["--accept-proxy-protocol", "--send-proxy-protocol", "v1"]
            )
            let client = try BlockingClient(port: proxy.port)
            try client.send(ProxyHeaders.v2("2001:218::1", port: 4242))
            let report = try #require(try client.readLine())
            // The l4lb side is IPv4: its address goes as IPv4-mapped IPv6, so the client's address
            // reaches the backend (UNKNOWN, as before, lost it).
            #expect(report == "PROXY TCP6 2001:218::1 ::ffff:127.0.0.1 4242 \(proxy.port)")
            let v4 = try BlockingClient(port: proxy.port)
            try v4.send(ProxyHeaders.v1("81.2.69.160", port: 4242))
            #expect(try v4.readLine() == "PROXY TCP4 81.2.69.160 127.0.0.1 4242 \(proxy.port)")
        }
    }
}
