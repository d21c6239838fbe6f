#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 socket address built from text, for the tests' plain sockets: the one place
/// where they fill in sockaddr structures.
struct TestSocketAddress {
    private var storage = sockaddr_storage()
    let length: socklen_t
    let family: Int32

    init(host: String, port: Int) {
        if host.contains(":") {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET6, host, &address.sin6_addr)
            (self.family, self.length) = (AF_INET6, socklen_t(MemoryLayout<sockaddr_in6>.size))
            withUnsafeBytes(of: &address) { bytes in
                withUnsafeMutableBytes(of: &self.storage) { $0.copyMemory(from: bytes) }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, host, &address.sin_addr)
            (self.family, self.length) = (AF_INET, socklen_t(MemoryLayout<sockaddr_in>.size))
            withUnsafeBytes(of: &address) { bytes in
                withUnsafeMutableBytes(of: &self.storage) { $0.copyMemory(from: bytes) }
            }
        }
    }

    /// Calls `body` with the address as the socket calls take it.
    func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafePointer(to: self.storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, self.length) }
        }
    }

    /// The local port `fd` is bound to, or nil.
    static func localPort(of fd: Int32) -> Int? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard status == 0 else { return nil }
        // sin_port and sin6_port sit at the same offset, right after the family.
        return withUnsafeBytes(of: &storage) { Int(UInt16($0[2]) << 8 | UInt16($0[3])) }
    }
}

/// A listening socket on 127.0.0.1, port of the kernel's choice, for the test backends built on
/// plain sockets; returns the descriptor and the port.
func listenOnLoopback(backlog: Int32) -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    _ = TestSocketAddress(host: "127.0.0.1", port: 0).withSockaddr { bind(fd, $0, $1) }
    listen(fd, backlog)
    return (fd, TestSocketAddress.localPort(of: fd) ?? 0)
}
