/// Writes the PROXY protocol header l4lb sends to backends with `--send-proxy-protocol`, so that
/// they see the client's address (and the address it connected to) instead of l4lb's.
public enum ProxyProtocolEncoder {
    public enum Version: String, Sendable, CaseIterable {
        case v1
        case v2
    }

    /// The header for a connection from `client` to `local` (the l4lb address the client reached).
    /// A client or local address that is not IP, or whose families differ, gives UNKNOWN (v1) or
    /// LOCAL (v2): the backend then uses the connection's own addresses.
    public static func header(_ version: Version, client: ClientAddress, local: ClientAddress) -> [UInt8] {
        var localAddress = local
        // An IPv4 client on a dual-stack listener: speak v4 on both ends if the local side can.
        if client.family != localAddress.family, client.family == .ipv4, let mapped = Self.unmapped(localAddress) {
            localAddress = mapped
        }
        // An IPv6 client (from a PROXY header) that reached an IPv4 listener: the local address as
        // IPv4-mapped IPv6, so the header is TCP6 and keeps the client's address.
        if client.family == .ipv6, localAddress.family == .ipv4 {
            localAddress = ClientAddress(
                family: .ipv6,
                bytes: [UInt8](repeating: 0, count: 10) + [0xFF, 0xFF] + localAddress.bytes,
                port: localAddress.port
            )
        }
        let known = client.family != .unspecified && client.family == localAddress.family
        switch version {
        case .v1:
            guard known else { return Array("PROXY UNKNOWN\r\n".utf8) }
            let family = client.family == .ipv4 ? "TCP4" : "TCP6"
            return Array(
                "PROXY \(family) \(Self.text(client)) \(Self.text(localAddress)) \(client.port) \(localAddress.port)\r\n"
                    .utf8
            )
        case .v2:
            var header = ProxyProtocolHeader.v2Signature
            guard known else {
                header += [0x20, 0x00, 0x00, 0x00]  // LOCAL, UNSPEC, no addresses
                return header
            }
            let isV4 = client.family == .ipv4
            let length: UInt16 = isV4 ? 12 : 36
            header += [0x21, isV4 ? 0x11 : 0x21, UInt8(length >> 8), UInt8(length & 0xFF)]
            header += client.bytes
            header += localAddress.bytes
            header += [UInt8(client.port >> 8), UInt8(client.port & 0xFF)]
            header += [UInt8(localAddress.port >> 8), UInt8(localAddress.port & 0xFF)]
            return header
        }
    }

    /// The dotted or colon form of an address, without the port.
    private static func text(_ address: ClientAddress) -> String {
        let description = address.description
        if address.family == .ipv6 {
            return String(description.dropFirst().prefix { $0 != "]" })
        }
        return String(description.prefix { $0 != ":" })
    }

    /// ::ffff:a.b.c.d as a.b.c.d.
    private static func unmapped(_ address: ClientAddress) -> ClientAddress? {
        let bytes = address.bytes
        guard address.family == .ipv6, bytes.count == 16, bytes.prefix(10).allSatisfy({ $0 == 0 }), bytes[10] == 0xFF,
            bytes[11] == 0xFF
        else { return nil }
        return ClientAddress(family: .ipv4, bytes: bytes[12..<16], port: address.port)
    }
}
