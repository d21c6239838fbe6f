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
        let (listenFD, port, bound) = listenOnLoopback(backlog: 0)
        self.listenFD = listenFD
        self.port = port
        var address = bound
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        // Backlog 0 admits one finished handshake; a few non-blocking connects fill the queue for sure.
        for _ in 0..<3 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
            }
            self.fillers.append(fd)
        }
    }

    deinit {
        for fd in self.fillers { close(fd) }
        close(self.listenFD)
    }
}
