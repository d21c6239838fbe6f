import CLinux
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A socket address as the kernel takes it, built once (when a pool is built, or a listener bound)
/// so that a connect passes it as is.
public struct RawSocketAddress: Sendable {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    init(_ address: SocketAddress) {
        address.withSockAddr { pointer, length in
            withUnsafeMutableBytes(of: &self.storage) { target in
                target.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: length))
            }
            self.length = socklen_t(length)
        }
    }

    init() {}

    var family: Int32 { Int32(self.storage.ss_family) }

    func withSockAddr<Result>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Result) -> Result {
        withUnsafeBytes(of: self.storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), self.length)
        }
    }

    /// The port, for a v4 or v6 address.
    var port: Int {
        withUnsafeBytes(of: self.storage) { raw in
            switch Int32(self.storage.ss_family) {
            case AF_INET: return Int(UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self)))
            case AF_INET6: return Int(UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self)))
            default: return 0
            }
        }
    }

    /// The address as NIO's type, for reporting.
    var socketAddress: SocketAddress? {
        withUnsafeBytes(of: self.storage) { raw -> SocketAddress? in
            switch Int32(self.storage.ss_family) {
            case AF_INET:
                return SocketAddress(raw.load(as: sockaddr_in.self), host: "")
            case AF_INET6:
                return SocketAddress(raw.load(as: sockaddr_in6.self), host: "")
            default:
                return nil
            }
        }
    }
}

extension ClientAddress {
    /// The address a socket call filled in; `unspecified` for anything that is not IP.
    init(_ raw: RawSocketAddress) {
        self = withUnsafeBytes(of: raw.storage) { bytes -> ClientAddress in
            switch Int32(raw.storage.ss_family) {
            case AF_INET:
                let port = UInt16(bigEndian: bytes.load(fromByteOffset: 2, as: UInt16.self))
                return ClientAddress(family: .ipv4, bytes: bytes[4..<8], port: port)
            case AF_INET6:
                let port = UInt16(bigEndian: bytes.load(fromByteOffset: 2, as: UInt16.self))
                return ClientAddress(family: .ipv6, bytes: bytes[8..<24], port: port)
            default:
                return .unspecified
            }
        }
    }
}

/// The few system calls of the relay, each wrapped once with its error handling, so that the loop
/// reads as what it does.
enum SocketCalls {
    /// What a failed call's errno means to the relay.
    enum Failure: Error, Equatable {
        /// Try again when epoll says so.
        case wouldBlock
        /// The peer reset the connection (ECONNRESET, or EPIPE on a write).
        case reset
        /// l4lb is out of descriptors or kernel memory: its own condition, never a backend's fault.
        case outOfResources
        case other(Int32)

        init(errno code: Int32) {
            switch code {
            case EAGAIN, EWOULDBLOCK: self = .wouldBlock
            case ECONNRESET, EPIPE: self = .reset
            case EMFILE, ENFILE, ENOBUFS, ENOMEM: self = .outOfResources
            default: self = .other(code)
            }
        }
    }

    static let streamFlags = Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue)

    /// A non-blocking listening socket on `address`. With `reusePort`, each relay loop has its own
    /// on the same port and the kernel spreads new connections among them.
    static func listen(
        on address: RawSocketAddress,
        backlog: Int32,
        reusePort: Bool
    ) throws(L4LBError) -> (fd: Int32, bound: RawSocketAddress) {
        let fd = socket(address.family, Self.streamFlags, 0)
        guard fd >= 0 else { throw L4LBError(.bindFailed, Self.describe(errno)) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if reusePort {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        // Accepted sockets inherit TCP_NODELAY from the listener: no setsockopt per client.
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withSockAddr { bind(fd, $0, $1) }
        guard bound == 0, Glibc.listen(fd, backlog) == 0 else {
            let reason = Self.describe(errno)
            close(fd)
            throw L4LBError(.bindFailed, reason)
        }
        var local = RawSocketAddress()
        local.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutablePointer(to: &local.storage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &local.length) }
        }
        return (fd, local)
    }

    /// Accepts one client, non-blocking; its peer address comes with it.
    static func accept(_ listener: Int32) -> Result<(fd: Int32, peer: RawSocketAddress), Failure> {
        var peer = RawSocketAddress()
        peer.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = withUnsafeMutablePointer(to: &peer.storage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                l4lb_accept4(listener, $0, &peer.length, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
            }
        }
        guard fd >= 0 else { return .failure(Failure(errno: errno)) }
        return .success((fd, peer))
    }

    /// Starts a non-blocking connect. `inProgress` is the usual answer; the outcome comes as EPOLLOUT
    /// (connected) or EPOLLERR (see `pendingError`).
    enum ConnectStart {
        case connected(Int32)
        case inProgress(Int32)
        case failed(Failure)
    }

    static func connect(to address: RawSocketAddress) -> ConnectStart {
        let fd = socket(address.family, Self.streamFlags, 0)
        guard fd >= 0 else { return .failed(Failure(errno: errno)) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let result = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        if result == 0 { return .connected(fd) }
        let code = errno
        if code == EINPROGRESS { return .inProgress(fd) }
        close(fd)
        return .failed(Failure(errno: code))
    }

    /// The error a failed non-blocking connect left on its socket.
    static func pendingError(_ fd: Int32) -> Int32 {
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
        return code
    }

    /// The local address a client reached (for a PROXY header toward a backend, on a wildcard listener).
    static func localAddress(_ fd: Int32) -> RawSocketAddress {
        var local = RawSocketAddress()
        local.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutablePointer(to: &local.storage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &local.length) }
        }
        return local
    }

    /// Reads into `buffer`: the byte count (0 at EOF) or why not.
    @inline(__always)
    static func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, capacity: Int) -> Result<Int, Failure> {
        while true {
            let count = recv(fd, buffer, capacity, 0)
            if count >= 0 { return .success(count) }
            if errno != EINTR { return .failure(Failure(errno: errno)) }
        }
    }

    /// Writes what the socket takes of `bytes`: the count written (0 when it would block) or why not.
    @inline(__always)
    static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Result<Int, Failure> {
        guard bytes.count > 0 else { return .success(0) }
        while true {
            let count = Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if count >= 0 { return .success(count) }
            let failure = Failure(errno: errno)
            if failure == .wouldBlock { return .success(0) }
            if errno != EINTR { return .failure(failure) }
        }
    }

    static func shutdownWrite(_ fd: Int32) {
        _ = shutdown(fd, Int32(SHUT_WR))
    }

    /// Closes `fd` so that the peer gets a reset, not a FIN: an aborted stream must not look complete.
    static func closeWithReset(_ fd: Int32) {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }

    static func describe(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// The health checker's name for a failed connect's errno.
    static func failureKind(errno code: Int32) -> BackendHealthMachine.FailureKind {
        switch code {
        case ECONNREFUSED: return .refused
        case ETIMEDOUT: return .timeout
        default: return .reset
        }
    }
}
