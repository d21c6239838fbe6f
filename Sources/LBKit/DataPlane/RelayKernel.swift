import CLinux

/// The system calls a relay loop makes, behind one seam: production passes `SystemKernel`, whose
/// calls are the kernel's own; the tests pass a simulated kernel that reorders readiness, splits
/// reads and writes, injects every errno and moves a virtual clock, driven by a seeded generator.
///
/// Each call returns what the system call returns, with the error as a negative errno in place of
/// -1 (the kernel's own convention), so that `errno` is read once, right after the call, and the
/// loop's handling of EINTR and of every failure (`SocketCalls`) runs on both kernels alike.
///
/// The loop is generic over its kernel, so production code is specialized and pays no indirection.
protocol RelayKernel: Sendable {
    /// Monotonic nanoseconds.
    func now() -> UInt64

    /// epoll_create1(EPOLL_CLOEXEC): the poller's descriptor, or -errno.
    func makePoller() -> Int32
    /// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC): the wake-up descriptor, or -errno.
    func makeWakeup() -> Int32
    /// epoll_ctl: 0, or -errno.
    func control(poller: Int32, operation: Int32, fd: Int32, events: UInt32, token: UInt64) -> Int32
    /// epoll_wait: the number of events written to `events`, or -errno.
    func wait(poller: Int32, events: UnsafeMutablePointer<epoll_event>, capacity: Int32, timeout: Int32) -> Int32
    /// Adds one to the wake-up counter: 0, or -errno.
    func signal(wakeup: Int32) -> Int32
    /// Reads (and so resets) the wake-up counter: 0, or -errno.
    func clear(wakeup: Int32) -> Int32

    /// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the client's descriptor, or -errno; `peer` is filled.
    func accept(listener: Int32, peer: inout RawSocketAddress) -> Int32
    /// A non-blocking, close-on-exec stream socket of `family` with TCP_NODELAY and SO_KEEPALIVE set:
    /// the descriptor, or -errno.
    func makeStreamSocket(family: Int32) -> Int32
    /// connect(2) on a non-blocking socket: 0, or -errno (-EINPROGRESS is the usual answer).
    func connect(_ fd: Int32, to address: RawSocketAddress) -> Int32
    /// getsockopt(SO_ERROR): the socket's pending error (0 for none), or -errno of the call itself.
    func pendingError(_ fd: Int32) -> Int32
    /// getsockname: the address, or nil.
    func localAddress(_ fd: Int32) -> RawSocketAddress?
    /// recv(2): the byte count (0 at EOF), or -errno.
    func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, capacity: Int) -> Int
    /// send(2) with MSG_NOSIGNAL: the byte count, or -errno.
    func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int
    /// shutdown(SHUT_WR): 0, or -errno.
    func shutdownWrite(_ fd: Int32) -> Int32
    /// Sets SO_LINGER to zero, so that the close that follows sends a reset: 0, or -errno.
    func lingerZero(_ fd: Int32) -> Int32
    /// close(2): 0, or -errno. The descriptor is gone either way (Linux never keeps it on EINTR).
    func close(_ fd: Int32) -> Int32
    /// Bytes in the socket's send queue that its peer has not acknowledged (SIOCOUTQ); 0 if unknown.
    func unacknowledgedBytes(_ fd: Int32) -> Int
    /// Bytes in the socket's receive queue that l4lb has not read (SIOCINQ); 0 if unknown.
    func unreadBytes(_ fd: Int32) -> Int
}
