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
        listen(listenFD, 0)
        self.port = Int(UInt16(bigEndian: address.sin_port))
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
