import FuzzSupport
import NIOCore
import Testing

@testable import LBKit

/// Every parser that takes outside bytes, fed mutated inputs: each must answer (a value or a
/// one-line L4LBError) and never crash or hang. Property checks ride along: what l4lb writes, it
/// reads back unchanged. The corpus is the list of seeds below; a crasher, once found, joins it.
@Suite("Parsers under fuzzing")
struct ParserFuzzTests {
    static let iterations = 20_000

    @Test("PROXY protocol v1 and v2 headers")
    func proxyHeaders() {
        let v2 =
            ProxyProtocolHeader.v2Signature + [0x21, 0x11, 0x00, 0x0C, 1, 2, 3, 4, 5, 6, 7, 8, 0x1F, 0x90, 0x00, 0x50]
        let corpus = [
            "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET /", "PROXY TCP6 2001:db8::1 ::1 1 2\r\n",
            "PROXY UNKNOWN\r\n", String(decoding: v2, as: UTF8.self),
        ]
        Mutator.fuzz(corpus, seed: 1, iterations: Self.iterations) { bytes in
            let verdict = ProxyProtocolHeader.parse(ByteBuffer(bytes: bytes).readableBytesView)
            if case .header(_, let length) = verdict {
                #expect(length > 0 && length <= bytes.count)
            }
        }
        // Raw v2 headers with random bytes after the signature, not only edits of valid ones.
        var mutator = Mutator(seed: 2)
        for _ in 0..<Self.iterations {
            let tail = (0..<mutator.below(64)).map { _ in UInt8(truncatingIfNeeded: mutator.next()) }
            _ = ProxyProtocolHeader.parse(ByteBuffer(bytes: ProxyProtocolHeader.v2Signature + tail).readableBytesView)
        }
    }

    @Test("addresses, backend specs, policy specs and durations")
    func operatorValues() {
        let corpus = [
            "127.0.0.1:8080", "[::1]:0", "backend.internal:9000,weight=256", "10.0.0.1:80,region=eu-west",
            "round-robin", "geo {\"fallback\": [\"x\"]}", "1500ms", "2m", "0.5s",
        ]
        Mutator.fuzz(corpus, seed: 4, iterations: Self.iterations) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            if let address = try? HostAndPort(parsing: text) {
                #expect(address.port >= 1 && address.port <= 65_535)
                #expect(!address.host.unicodeScalars.contains { $0.value < 0x20 })
            }
            if let spec = try? BackendSpec(parsing: text) {
                #expect(spec.weight >= 1 && spec.weight <= 256)
            }
            _ = try? PolicySpec(parsing: text)
            _ = try? DurationParser.parse(text, flag: "--idle-timeout")
        }
    }

    @Test("what l4lb writes it reads back: PROXY headers round-trip")
    func roundTrips() throws {
        var mutator = Mutator(seed: 5)
        for _ in 0..<2_000 {
            let isV4 = mutator.below(2) == 0
            let addressBytes = (0..<(isV4 ? 4 : 16)).map { _ in UInt8(truncatingIfNeeded: mutator.next()) }
            let client = ClientAddress(
                family: isV4 ? .ipv4 : .ipv6,
                bytes: addressBytes,
                port: UInt16(mutator.below(65_536))
            )
            let local = ClientAddress(family: isV4 ? .ipv4 : .ipv6, bytes: addressBytes.reversed(), port: 443)
            for version in ProxyProtocolEncoder.Version.allCases {
                let header = ProxyProtocolEncoder.header(version, client: client, local: local)
                let verdict = ProxyProtocolHeader.parse(ByteBuffer(bytes: header).readableBytesView)
                #expect(verdict == .header(client: client, length: header.count))
            }
        }
    }
}
