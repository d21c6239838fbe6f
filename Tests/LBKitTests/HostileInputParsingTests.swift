import NIOCore
import Testing

@testable import LBKit

/// Outside bytes that used to get through (issue 10), refused or made harmless without a socket.
@Suite("Hostile input, parsed")
struct HostileInputParsingTests {
    @Test(
        "addresses with control characters or signed ports are refused",
        arguments: ["127.0.0.1\u{0}evil:25101", "10.0.0.1:80\nx", "10.0.0.1\t:80", "10.0.0.1:+80", "10.0.0.1:-1"]
    )
    func badAddresses(text: String) {
        #expect(throws: L4LBError.self) { try HostAndPort(parsing: text) }
    }

    @Test(
        "PROXY v1 ports are plain decimal: a sign or a leading zero is refused",
        arguments: [
            "PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 80 +443\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 80 65536\r\n",
        ]
    )
    func badProxyPorts(line: String) {
        let verdict = ProxyProtocolHeader.parse(ByteBuffer(string: line).readableBytesView)
        guard case .invalid = verdict else {
            Issue.record("accepted: \(verdict)")
            return
        }
    }

    @Test("log values are escaped in the text format: no newline, no terminal escape survives")
    func logEscaping() {
        #expect(LineLogHandler.escaped("a\nb\r\tc\u{1b}[31m\\") == "a\\nb\\r\\tc\\u{1b}[31m\\\\")
        #expect(LineLogHandler.escaped("plain text") == "plain text")
    }

    @Test("an IPv6 client behind an IPv4 listener is passed on as TCP6, not UNKNOWN")
    func proxyHeaderFamilies() {
        let client = ClientAddress(
            family: .ipv6,
            bytes: [0x20, 0x01, 0x02, 0x18] + [UInt8](repeating: 0, count: 11) + [1],
            port: 4242
        )
        let local = ClientAddress(family: .ipv4, bytes: [127, 0, 0, 1], port: 8080)
        let header = String(decoding: ProxyProtocolEncoder.header(.v1, client: client, local: local), as: UTF8.self)
        #expect(header == "PROXY TCP6 2001:218::1 ::ffff:127.0.0.1 4242 8080\r\n")
    }

    @Test("'*' listens on every IPv4 address, for --listen and --admin alike")
    func wildcardListen() throws {
        let address = try BackendResolver.resolveListen(HostAndPort(host: "*", port: 9000))
        #expect(address.ipAddress == "0.0.0.0")
        #expect(address.port == 9000)
    }

    @Test("Prometheus label values are escaped")
    func prometheusEscaping() {
        var text = PrometheusText()
        text.add("m", type: "gauge", help: "h", labels: [("backend", "a\"b\\c\nd")], value: "1")
        #expect(
            String(decoding: text.rendered(), as: UTF8.self)
                == "# HELP m h\n# TYPE m gauge\nm{backend=\"a\\\"b\\\\c\\nd\"} 1\n"
        )
    }

    @Test("a burst of pool messages: order kept, the last word about an address wins, O(1) each")
    func poolEditor() {
        let a = BackendSpec(address: HostAndPort(host: "10.0.0.1", port: 80))
        let b = BackendSpec(address: HostAndPort(host: "10.0.0.2", port: 80))
        let c = BackendSpec(address: HostAndPort(host: "10.0.0.3", port: 80))
        var editor = PoolEditor([a, b])
        #expect(editor.apply(.addServer(a)) == nil)
        #expect(editor.apply(.addServer(c)) == .added(c))
        #expect(editor.apply(.removeServer(a.address)) == .removed(a.address))
        #expect(editor.apply(.removeServer(a.address)) == nil)
        let heavier = BackendSpec(address: b.address, weight: 4)
        #expect(editor.apply(.addServer(heavier)) == .updated(heavier))
        #expect(editor.apply(.addServer(a)) == .added(a))
        #expect(editor.specs == [heavier, c, a])
        #expect(editor.count == 3)
    }
}
