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

/// The relay's handling of each system call's result, written once over any `RelayKernel`: EINTR is
/// retried here, errno values are sorted by what they mean to the relay, and EBADF or EFAULT, which
/// only a bug in l4lb can cause, stop a debug build.
enum SocketCalls {
    /// What a failed call's errno means to the relay.
    enum Failure: Error, Equatable {
        /// Try again when epoll says so.
        case wouldBlock
        /// The peer reset the connection (ECONNRESET, or EPIPE on a write).
        case reset
        /// l4lb is out of descriptors or kernel memory: its own condition, never a backend's fault.
        case outOfResources
        /// No local address or port is free for a connect (EADDRNOTAVAIL, EADDRINUSE, EAGAIN):
        /// l4lb's own shortage (HAProxy's "no free ports"), never a backend's fault.
        case noFreePorts
        case other(Int32)

        init(errno code: Int32) {
            switch code {
            case EAGAIN, EWOULDBLOCK: self = .wouldBlock
            case ECONNRESET, EPIPE: self = .reset
            case EMFILE, ENFILE, ENOBUFS, ENOMEM: self = .outOfResources
            default: self = .other(code)
            }
        }

        /// A connect's errno: EAGAIN there means no free port, not "try later".
        init(connectErrno code: Int32) {
            switch code {
            case EADDRNOTAVAIL, EADDRINUSE, EAGAIN: self = .noFreePorts
            default: self.init(errno: code)
            }
        }

        /// Whether l4lb itself, not the peer, is short of something.
        var isLocalShortage: Bool { self == .outOfResources || self == .noFreePorts }
    }

    static let streamFlags = Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue)

    /// Stops a debug build on an errno that only a bug in l4lb can cause (a descriptor it does not
    /// own, a bad pointer); a release build carries on, treating it as the failure it reports.
    @inline(__always)
    static func checkAcceptable(_ code: Int32, _ call: StaticString) {
        assert(code != EBADF && code != EFAULT, "\(call) failed with \(describe(code)): a bug in l4lb")
    }

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
        // Accepted sockets inherit TCP_NODELAY and SO_KEEPALIVE from the listener: no setsockopt
        // per client. Keepalive finds a client that vanished without a FIN or a reset.
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withSockAddr { bind(fd, $0, $1) }
        guard bound == 0, Glibc.listen(fd, backlog) == 0 else {
            let reason = Self.describe(errno)
            Glibc.close(fd)
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
    @inline(__always)
    static func accept<Kernel: RelayKernel>(
        _ kernel: Kernel,
        _ listener: Int32
    ) -> Result<(fd: Int32, peer: RawSocketAddress), Failure> {
        var peer = RawSocketAddress()
        while true {
            let fd = kernel.accept(listener: listener, peer: &peer)
            if fd >= 0 { return .success((fd, peer)) }
            if -fd == EINTR { continue }
            Self.checkAcceptable(-fd, "accept4")
            return .failure(Failure(errno: -fd))
        }
    }

    /// Starts a non-blocking connect. `inProgress` is the usual answer; the outcome comes as EPOLLOUT
    /// (connected) or EPOLLERR (see `pendingError`).
    enum ConnectStart {
        case connected(Int32)
        case inProgress(Int32)
        case failed(Failure)
    }

    static func connect<Kernel: RelayKernel>(_ kernel: Kernel, to address: RawSocketAddress) -> ConnectStart {
        let fd = kernel.makeStreamSocket(family: address.family)
        guard fd >= 0 else { return .failed(Failure(errno: -fd)) }
        var result = kernel.connect(fd, to: address)
        // Interrupted, the connect goes on in the kernel: its outcome comes as for EINPROGRESS.
        if result == -EINTR { result = -EINPROGRESS }
        if result == 0 { return .connected(fd) }
        if result == -EINPROGRESS { return .inProgress(fd) }
        Self.checkAcceptable(-result, "connect")
        Self.close(kernel, fd)
        return .failed(Failure(connectErrno: -result))
    }

    /// The error a failed non-blocking connect left on its socket (0 for none).
    static func pendingError<Kernel: RelayKernel>(_ kernel: Kernel, _ fd: Int32) -> Int32 {
        let code = kernel.pendingError(fd)
        if code < 0 {
            Self.checkAcceptable(-code, "getsockopt(SO_ERROR)")
            return -code
        }
        return code
    }

    /// Reads into `buffer`: the byte count (0 at EOF) or why not.
    @inline(__always)
    static func receive<Kernel: RelayKernel>(
        _ kernel: Kernel,
        _ fd: Int32,
        into buffer: UnsafeMutableRawPointer,
        capacity: Int
    ) -> Result<Int, Failure> {
        while true {
            let count = kernel.receive(fd, into: buffer, capacity: capacity)
            if count >= 0 { return .success(count) }
            let code = Int32(-count)
            if code == EINTR { continue }
            Self.checkAcceptable(code, "recv")
            return .failure(Failure(errno: code))
        }
    }

    /// Writes what the socket takes of `bytes`: the count written (0 when it would block) or why not.
    @inline(__always)
    static func send<Kernel: RelayKernel>(
        _ kernel: Kernel,
        _ fd: Int32,
        _ bytes: UnsafeRawBufferPointer
    ) -> Result<Int, Failure> {
        guard bytes.count > 0 else { return .success(0) }
        while true {
            let count = kernel.send(fd, bytes)
            if count >= 0 { return .success(count) }
            let code = Int32(-count)
            if code == EINTR { continue }
            Self.checkAcceptable(code, "send")
            let failure = Failure(errno: code)
            if failure == .wouldBlock { return .success(0) }
            return .failure(failure)
        }
    }

    /// Passes a FIN on. A peer that reset meanwhile (ENOTCONN) is told by the next read or write.
    static func shutdownWrite<Kernel: RelayKernel>(_ kernel: Kernel, _ fd: Int32) {
        let result = kernel.shutdownWrite(fd)
        if result < 0 { Self.checkAcceptable(-result, "shutdown") }
    }

    /// Closes `fd`. Linux releases the descriptor whatever close returns, so it is never retried.
    static func close<Kernel: RelayKernel>(_ kernel: Kernel, _ fd: Int32) {
        let result = kernel.close(fd)
        if result < 0 { Self.checkAcceptable(-result, "close") }
    }

    /// Closes `fd` so that the peer gets a reset, not a FIN: an aborted stream must not look complete.
    static func closeWithReset<Kernel: RelayKernel>(_ kernel: Kernel, _ fd: Int32) {
        let result = kernel.lingerZero(fd)
        if result < 0 { Self.checkAcceptable(-result, "setsockopt(SO_LINGER)") }
        Self.close(kernel, fd)
    }

    /// The text of an errno value. Thread-safe (strerror is not): relay threads call it.
    static func describe(_ code: Int32) -> String {
        String(cString: l4lb_errno_text(code))
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
