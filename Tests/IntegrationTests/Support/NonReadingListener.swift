#if canImport(Glibc)
import Glibc
#endif

/// A backend on 127.0.0.1 that accepts and never reads, watched with plain sockets: unlike a
/// SwiftNIO server that is not reading, it can tell when its peer (l4lb) closes the connection, from
/// poll alone, with the bytes it never read still queued.
final class NonReadingListener {
    let port: Int
    private let listenFD: Int32
    private var accepted: Int32 = -1

    init() {
        let listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listenFD = listenFD
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                bind(listenFD, pointer, length)
                return getsockname(listenFD, pointer, &length)
            }
        }
        listen(listenFD, 16)
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit {
        if self.accepted >= 0 { close(self.accepted) }
        close(self.listenFD)
    }

    /// Accepts one connection, waiting up to `timeoutSeconds`; false if none came.
    func acceptOne(timeoutSeconds: Int32) -> Bool {
        var pfd = pollfd(fd: self.listenFD, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutSeconds * 1000) > 0 else { return false }
        self.accepted = accept(self.listenFD, nil, nil)
        return self.accepted >= 0
    }

    /// POLLRDHUP, which Swift's Glibc module leaves out (it is a _GNU_SOURCE name).
    private static let peerHangUp: Int16 = 0x2000

    /// Whether the accepted connection's peer has closed it (FIN or reset), within `timeoutSeconds`.
    func peerClosed(timeoutSeconds: Int32) -> Bool {
        guard self.accepted >= 0 else { return false }
        var pfd = pollfd(fd: self.accepted, events: Self.peerHangUp, revents: 0)
        guard poll(&pfd, 1, timeoutSeconds * 1000) > 0 else { return false }
        return pfd.revents & (Self.peerHangUp | Int16(POLLHUP | POLLERR)) != 0
    }
}
