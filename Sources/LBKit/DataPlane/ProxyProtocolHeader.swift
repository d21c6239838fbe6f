import NIOCore

/// PROXY protocol v1 and v2 headers (HAProxy's spec), as sent by a load balancer or CDN in front
/// of l4lb to tell it the real client address. Parsing is pure: bytes in, a verdict out.
public enum ProxyProtocolHeader {
    /// The v2 signature: \r\n\r\n\0\r\nQUIT\n.
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// A v1 line is at most 107 bytes with its CRLF.
    static let v1MaximumLength = 107
    /// Longest v2 header accepted (addresses plus TLVs); the protocol allows 64 KiB, nobody sends that.
    static let v2MaximumLength = 16 + 4096

    public enum Verdict: Equatable, Sendable {
        /// Not enough bytes yet to decide.
        case needMoreBytes
        /// A valid header of `length` bytes. `client` is nil for LOCAL (v2) and UNKNOWN (v1)
        /// connections, which keep the socket's own peer address.
        case header(client: ClientAddress?, length: Int)
        case invalid(String)
    }

    public static func parse(_ bytes: ByteBufferView) -> Verdict {
        guard let first = bytes.first else { return .needMoreBytes }
        if first == UInt8(ascii: "P") {
            return Self.parseV1(bytes)
        }
        if first == Self.v2Signature[0] {
            return Self.parseV2(bytes)
        }
        return .invalid("no PROXY protocol header")
    }

    private static func parseV1(_ bytes: ByteBufferView) -> Verdict {
        let prefix = Array("PROXY ".utf8)
        let head = Array(bytes.prefix(prefix.count))
        guard head == Array(prefix.prefix(head.count)) else { return .invalid("no PROXY protocol header") }
        guard let lineFeed = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
            return bytes.count >= Self.v1MaximumLength
                ? .invalid("PROXY v1 line longer than 107 bytes") : .needMoreBytes
        }
        let length = lineFeed - bytes.startIndex + 1
        guard length <= Self.v1MaximumLength else { return .invalid("PROXY v1 line longer than 107 bytes") }
        let line = Array(bytes.prefix(length))
        guard line.count >= 2, line[line.count - 2] == UInt8(ascii: "\r") else {
            return .invalid("PROXY v1 line does not end with CRLF")
        }
        let fields = String(decoding: line.dropLast(2), as: UTF8.self).split(
            separator: " ",
            omittingEmptySubsequences: false
        )
        guard fields.count >= 2 else { return .invalid("PROXY v1 line has no protocol") }
        switch fields[1] {
        case "UNKNOWN":
            return .header(client: nil, length: length)
        case "TCP4", "TCP6":
            guard fields.count == 6 else { return .invalid("PROXY v1 line needs 6 fields, has \(fields.count)") }
            let isV4 = fields[1] == "TCP4"
            guard let port = Self.v1Port(fields[4]),
                let address = try? SocketAddress(ipAddress: String(fields[2]), port: Int(port))
            else {
                return .invalid("PROXY v1 source '\(fields[2]) \(fields[4])' is not an address and port")
            }
            guard (isV4 && address.protocol == .inet) || (!isV4 && address.protocol == .inet6),
                (try? SocketAddress(ipAddress: String(fields[3]), port: 0)) != nil, Self.v1Port(fields[5]) != nil
            else {
                return .invalid("PROXY v1 addresses do not match \(fields[1])")
            }
            return .header(client: ClientAddress(address), length: length)
        default:
            return .invalid("PROXY v1 protocol '\(fields[1].prefix(16))' is not TCP4, TCP6 or UNKNOWN")
        }
    }

    /// A v1 port: decimal digits only, no sign and no leading zero (the spec's form), at most 65535.
    private static func v1Port(_ text: Substring) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy(\.isASCIIDigit), text == "0" || text.first != "0"
        else { return nil }
        return UInt16(text)
    }

    private static func parseV2(_ bytes: ByteBufferView) -> Verdict {
        let head = Array(bytes.prefix(16))
        guard head.prefix(12).elementsEqual(Self.v2Signature.prefix(min(12, head.count))) else {
            return .invalid("no PROXY protocol header")
        }
        guard head.count == 16 else { return .needMoreBytes }
        let version = head[12] >> 4
        let command = head[12] & 0x0F
        guard version == 2 else { return .invalid("PROXY v2 header with version \(version)") }
        guard command <= 1 else { return .invalid("PROXY v2 header with command \(command)") }
        let payloadLength = Int(head[14]) << 8 | Int(head[15])
        let length = 16 + payloadLength
        guard length <= Self.v2MaximumLength else { return .invalid("PROXY v2 header of \(length) bytes is too long") }
        guard bytes.count >= length else { return .needMoreBytes }
        if command == 0 {
            // LOCAL: a health check from the proxy itself; the connection's own addresses apply.
            return .header(client: nil, length: length)
        }
        let payload = Array(bytes.dropFirst(16).prefix(payloadLength))
        switch head[13] {
        case 0x11:  // TCP over IPv4
            guard payload.count >= 12 else { return .invalid("PROXY v2 TCP4 addresses are truncated") }
            let port = UInt16(payload[8]) << 8 | UInt16(payload[9])
            return .header(client: ClientAddress(family: .ipv4, bytes: payload[0..<4], port: port), length: length)
        case 0x21:  // TCP over IPv6
            guard payload.count >= 36 else { return .invalid("PROXY v2 TCP6 addresses are truncated") }
            let port = UInt16(payload[32]) << 8 | UInt16(payload[33])
            return .header(client: ClientAddress(family: .ipv6, bytes: payload[0..<16], port: port), length: length)
        case 0x00:
            return .header(client: nil, length: length)
        default:
            return .invalid("PROXY v2 address family 0x\(String(head[13], radix: 16)) is not TCP over IPv4 or IPv6")
        }
    }
}
