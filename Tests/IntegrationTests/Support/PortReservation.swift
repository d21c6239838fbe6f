import LBKit

#if canImport(Glibc)
import Glibc
#endif

/// A port on 127.0.0.1 held by a bound socket that does not listen: connecting to it is refused,
/// and no other socket (a server of a test running in parallel, or an outgoing connection's
/// ephemeral port, which may even connect to itself) can take the port until `release()`.
/// That is what a dead backend looks like, without a window in which the port is up for grabs.
///
/// The socket is bound with SO_REUSEPORT, as `TestBackend`'s listeners are, so a reservation can be
/// taken while a backend still listens and a backend can restart on the port before it is released:
/// the port changes hands with no gap. Only listening sockets share a reuseport group's connections,
/// so a reserved port still refuses them.
final class PortReservation: @unchecked Sendable {
    let port: Int
    private var fd: Int32

    /// Reserves a port of the kernel's choice.
    convenience init() {
        // A port of the kernel's choice is free by definition.
        try! self.init(port: 0)
    }

    /// Reserves `port`; fails if a socket without SO_REUSEPORT holds it.
    init(port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = TestSocketAddress(host: "127.0.0.1", port: port).withSockaddr { bind(fd, $0, $1) } == 0
        guard bound, let boundPort = TestSocketAddress.localPort(of: fd) else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw TestFailure("cannot reserve 127.0.0.1:\(port): \(reason)")
        }
        self.fd = fd
        self.port = boundPort
    }

    deinit {
        self.release()
    }

    var spec: BackendSpec { BackendSpec(address: HostAndPort(host: "127.0.0.1", port: self.port)) }

    /// Frees the port (for a backend about to start on it).
    func release() {
        if self.fd >= 0 {
            close(self.fd)
            self.fd = -1
        }
    }
}
