#if canImport(Glibc)
import Glibc
#endif

/// A listener on 127.0.0.1 that never accepts and whose accept queue is full, so that the kernel
/// drops further SYNs and a connect to it hangs until the connector's timeout: the backend that
/// "never answers".
final class BlackholeListener {
    let port: Int
    private let listenFD: Int32
    private var fillers: [Int32] = []

    init() {
        (self.listenFD, self.port) = listenOnLoopback(backlog: 0)
        let address = TestSocketAddress(host: "127.0.0.1", port: self.port)
        // Backlog 0 admits one finished handshake; a few non-blocking connects fill the queue for sure.
        for _ in 0..<3 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = address.withSockaddr { connect(fd, $0, $1) }
            self.fillers.append(fd)
        }
    }

    deinit {
        for fd in self.fillers { close(fd) }
        close(self.listenFD)
    }
}
