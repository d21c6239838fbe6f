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

}
