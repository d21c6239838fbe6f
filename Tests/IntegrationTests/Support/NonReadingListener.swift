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
        (self.listenFD, self.port) = listenOnLoopback(backlog: 16)
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
