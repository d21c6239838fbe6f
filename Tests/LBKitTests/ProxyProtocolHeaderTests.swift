import LBKit
import NIOCore
import Testing

@Suite("PROXY protocol headers")
struct ProxyProtocolHeaderTests {
    private func parse(_ bytes: [UInt8]) -> ProxyProtocolHeader.Verdict {
        ProxyProtocolHeader.parse(ByteBuffer(bytes: bytes).readableBytesView)
    }

    private func parse(_ text: String) -> ProxyProtocolHeader.Verdict {
        self.parse(Array(text.utf8))
    }

    static func v2(command: UInt8 = 1, family: UInt8, addresses: [UInt8], extra: [UInt8] = []) -> [UInt8] {
        let payload = addresses + extra
        return [
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20 | command, family,
            UInt8(payload.count >> 8), UInt8(payload.count & 0xFF),
        ] + payload
    }

    @Test("v1 TCP4, TCP6 and UNKNOWN")
    func v1() throws {
        let line = "PROXY TCP4 81.2.69.160 10.0.0.1 40000 443\r\n"
        guard case .header(let client?, let length) = self.parse(line + "GET /") else {
            Issue.record("not parsed")
            return
        }
        #expect(length == line.utf8.count)
        #expect(client.description == "81.2.69.160:40000")
        guard case .header(let v6?, _) = self.parse("PROXY TCP6 2001:218::1 ::1 5 6\r\n") else {
            Issue.record("TCP6 not parsed")
            return
        }
        #expect(v6.family == .ipv6)
        #expect(v6.port == 5)
        #expect(self.parse("PROXY UNKNOWN\r\n") == .header(client: nil, length: 15))
        #expect(self.parse("PROXY UNKNOWN ffff:f::1 ::1 1 2\r\n") == .header(client: nil, length: 33))
    }

    @Test(
        "v1 partial headers wait for more bytes",
        arguments: ["P", "PROX", "PROXY TCP4 1.2.3.4", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"]
    )
    func v1Partial(text: String) {
        #expect(self.parse(text) == .needMoreBytes)
    }

    @Test(
        "bad v1 headers are refused",
        arguments: [
            "GET / HTTP/1.1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            "PROXY TCP4 ::1 ::1 1 2\r\n", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 " + String(repeating: "1", count: 120) + "\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        ]
    )
    func v1Invalid(text: String) {
        guard case .invalid = self.parse(text) else {
            Issue.record("\(text.debugDescription) was not refused")
            return
        }
    }

    @Test("v2 TCP4, TCP6, LOCAL, with TLVs and trailing data")
    func v2() {
        let v4 = Self.v2(
            family: 0x11,
            addresses: [89, 160, 20, 112, 10, 0, 0, 1, 0x9C, 0x40, 0x01, 0xBB],
            extra: [0x04, 0x00, 0x01, 0x00]
        )
        guard case .header(let client?, let length) = self.parse(v4 + Array("hello".utf8)) else {
            Issue.record("v2 TCP4 not parsed")
            return
        }
        #expect(length == v4.count)
        #expect(client.description == "89.160.20.112:40000")
        let v6Address: [UInt8] = [0x20, 0x01, 0x02, 0x18] + [UInt8](repeating: 0, count: 11) + [1]
        let v6 = Self.v2(family: 0x21, addresses: v6Address + [UInt8](repeating: 0, count: 16) + [0, 7, 0, 8])
        guard case .header(let client6?, _) = self.parse(v6) else {
            Issue.record("v2 TCP6 not parsed")
            return
        }
        #expect(client6.bytes == v6Address)
        #expect(client6.port == 7)
        #expect(self.parse(Self.v2(command: 0, family: 0x00, addresses: [])) == .header(client: nil, length: 16))
    }

    @Test("v2 partial headers wait; bad ones are refused")
    func v2Edges() {
        let full = Self.v2(family: 0x11, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])
        for cut in [1, 11, 12, 15, 16, full.count - 1] {
            #expect(self.parse(Array(full.prefix(cut))) == .needMoreBytes)
        }
        var badVersion = full
        badVersion[12] = 0x11
        var badCommand = full
        badCommand[12] = 0x2F
        var badSignature = full
        badSignature[5] = 0x00
        let truncated = Self.v2(family: 0x11, addresses: [1, 2, 3])
        let udp = Self.v2(family: 0x12, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])
        var huge = Self.v2(family: 0x11, addresses: [])
        huge[14] = 0xFF
        for bytes in [badVersion, badCommand, badSignature, truncated, udp, huge] {
            guard case .invalid = self.parse(bytes) else {
                Issue.record("\(bytes) was not refused")
                continue
            }
        }
    }
}
