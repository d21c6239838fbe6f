import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The client's address as plain bytes and a port, the shape that a C policy plugin can receive as is.
///
/// For IPv4 the first four bytes hold the address in network order; for IPv6 all sixteen do.
public struct ClientAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Family: UInt8, Sendable {
        case unspecified = 0
        case ipv4 = 4
        case ipv6 = 6
    }

    public var family: Family
    public var port: UInt16
    /// Sixteen address bytes in network order, stored as two words so the value needs no allocation.
    @usableFromInline var high: UInt64 = 0
    @usableFromInline var low: UInt64 = 0

    /// The sixteen address bytes as two words, for hashing.
    @inlinable
    public var addressWords: (UInt64, UInt64) { (self.high, self.low) }

    public static let unspecified = ClientAddress(family: .unspecified, bytes: [], port: 0)

    public init(family: Family, bytes: some Collection<UInt8>, port: UInt16) {
        self.family = family
        self.port = port
        withUnsafeMutableBytes(of: &self.high) { high in
            withUnsafeMutableBytes(of: &self.low) { low in
                for (offset, byte) in bytes.prefix(16).enumerated() {
                    if offset < 8 { high[offset] = byte } else { low[offset - 8] = byte }
                }
            }
        }
    }

    /// The peer address of a channel; `unspecified` for anything that is not IP.
    public init(_ socketAddress: SocketAddress?) {
        switch socketAddress {
        case .v4(let address):
            // Copied straight from the sockaddr: this runs once per accepted connection.
            let port = UInt16(socketAddress?.port ?? 0)
            self = withUnsafeBytes(of: address.address.sin_addr) { ClientAddress(family: .ipv4, bytes: $0, port: port) }
        case .v6(let address):
            let port = UInt16(socketAddress?.port ?? 0)
            self = withUnsafeBytes(of: address.address.sin6_addr) {
                ClientAddress(family: .ipv6, bytes: $0, port: port)
            }
        default:
            self = .unspecified
        }
    }

    /// Calls `body` with the sixteen stored address bytes, without allocating.
    public func withAddressBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        var words = (self.high, self.low)
        return withUnsafeBytes(of: &words) { body($0) }
    }

    /// The address bytes that are meaningful for the family: 4, 16 or none.
    public var bytes: [UInt8] {
        let length: Int
        switch self.family {
        case .ipv4: length = 4
        case .ipv6: length = 16
        case .unspecified: length = 0
        }
        var all = [UInt8](repeating: 0, count: 16)
        withUnsafeBytes(of: self.high) { for i in 0..<8 { all[i] = $0[i] } }
        withUnsafeBytes(of: self.low) { for i in 0..<8 { all[8 + i] = $0[i] } }
        return Array(all.prefix(length))
    }

    /// A 64-bit hash of the address bytes (not the port), stable for the life of the process.
    public var addressHash: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for word in [self.high, self.low] {
            hash = (hash ^ word) &* 0x100_0000_01b3
            hash ^= hash >> 29
        }
        return hash
    }

    public var description: String {
        switch self.family {
        case .ipv4: return "\(self.addressText):\(self.port)"
        case .ipv6: return "[\(self.addressText)]:\(self.port)"
        case .unspecified: return "unknown"
        }
    }

    /// The address alone, as `inet_ntop` writes it (no port, no brackets): what `init?(text:)` reads.
    public var addressText: String {
        switch self.family {
        case .ipv4:
            return self.bytes.map(String.init).joined(separator: ".")
        case .ipv6:
            var text = [CChar](repeating: 0, count: 64)
            var raw = in6_addr()
            withUnsafeMutableBytes(of: &raw) { target in
                self.withAddressBytes { target.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(16))) }
            }
            inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
            return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        case .unspecified:
            return "unknown"
        }
    }
}

extension ClientAddress {
    /// An address written as text (`192.0.2.7`, `2001:db8::1`); nil if it is not one.
    public init?(text: String, port: UInt16 = 0) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(family: .ipv4, bytes: withUnsafeBytes(of: &v4) { Array($0) }, port: port)
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(family: .ipv6, bytes: withUnsafeBytes(of: &v6) { Array($0) }, port: port)
        } else {
            return nil
        }
    }
}
