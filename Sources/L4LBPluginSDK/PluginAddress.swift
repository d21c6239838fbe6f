internal import CLBPolicy

#if canImport(Glibc)
import Glibc
#endif

/// An IP endpoint as l4lb gives it to a plugin: a client, or a backend's resolved address. Held
/// inline (no allocation), so that making one per pick costs nothing.
public struct PluginAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable {
        case ipv4, ipv6
    }

    public let family: Family
    public let port: UInt16
    /// The address bytes in network order: the first 4 for IPv4, all 16 for IPv6; the rest zero.
    private var high: UInt64
    private var low: UInt64

    /// An address from its bytes: 4 for IPv4, 16 for IPv6, in network order.
    public init?(bytes: some Collection<UInt8>, port: UInt16) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.family = bytes.count == 4 ? .ipv4 : .ipv6
        self.port = port
        (self.high, self.low) = (0, 0)
        withUnsafeMutableBytes(of: &self.high) { high in
            withUnsafeMutableBytes(of: &self.low) { low in
                for (index, byte) in bytes.enumerated() {
                    if index < 8 { high[index] = byte } else { low[index - 8] = byte }
                }
            }
        }
    }

    init(_ address: l4lb_address) {
        self.family = address.family == UInt8(L4LB_FAMILY_IPV4) ? .ipv4 : .ipv6
        self.port = address.port
        (self.high, self.low) = Swift.withUnsafeBytes(of: address.bytes) {
            ($0.loadUnaligned(fromByteOffset: 0, as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
    }

    /// Calls `body` with the address bytes: 4 for IPv4, 16 for IPv6.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let count = self.family == .ipv4 ? 4 : 16
        return Swift.withUnsafeBytes(of: (self.high, self.low)) {
            body(UnsafeRawBufferPointer(rebasing: $0.prefix(count)))
        }
    }

    /// The address bytes (allocates; `withUnsafeBytes` does not).
    public var bytes: [UInt8] { self.withUnsafeBytes { Array($0) } }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d); otherwise self. l4lb
    /// gives the client of a dual-stack listener in the mapped form.
    public var unmapped: PluginAddress {
        self.withUnsafeBytes { bytes in
            guard self.family == .ipv6, bytes.prefix(10).allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff
            else { return self }
            return PluginAddress(bytes: bytes[12..<16], port: self.port)!
        }
    }

    /// The address without the port, as `inet_ntop` writes it.
    public var description: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = self.family == .ipv4 ? AF_INET : AF_INET6
        let written = self.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }
        guard written != nil else { return "?" }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Calls `body` with the address (unmapped) as a `sockaddr`, for C libraries such as
    /// libmaxminddb.
    public func withSockaddr<Result>(_ body: (UnsafePointer<sockaddr>) -> Result) -> Result {
        let address = self.unmapped
        return address.withUnsafeBytes { bytes in
            if address.family == .ipv4 {
                var v4 = sockaddr_in()
                v4.sin_family = sa_family_t(AF_INET)
                v4.sin_port = address.port.bigEndian
                Swift.withUnsafeMutableBytes(of: &v4.sin_addr) { $0.copyMemory(from: bytes) }
                return Swift.withUnsafePointer(to: &v4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
            }
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = address.port.bigEndian
            Swift.withUnsafeMutableBytes(of: &v6.sin6_addr) { $0.copyMemory(from: bytes) }
            return Swift.withUnsafePointer(to: &v6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
        }
    }
}
