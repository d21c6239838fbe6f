#if canImport(Glibc)
import Glibc
#endif

/// A listening socket on 127.0.0.1, port of the kernel's choice, for the test backends built on
/// plain sockets; returns the descriptor, the port and the bound address (to connect to it).
func listenOnLoopback(backlog: Int32) -> (fd: Int32, port: Int, address: sockaddr_in) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            bind(fd, pointer, length)
            return getsockname(fd, pointer, &length)
        }
    }
    listen(fd, backlog)
    return (fd, Int(UInt16(bigEndian: address.sin_port)), address)
}
