import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// The relay's system calls as the kernel makes them. Each reads `errno` once, right after its call,
/// with nothing between them that could change it.
struct SystemKernel: RelayKernel {
    @inline(__always)
    func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    func makePoller() -> Int32 {
        let fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        return fd >= 0 ? fd : -errno
    }

    func makeWakeup() -> Int32 {
        let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        return fd >= 0 ? fd : -errno
    }

    func control(poller: Int32, operation: Int32, fd: Int32, events: UInt32, token: UInt64) -> Int32 {
        var event = epoll_event()
        l4lb_epoll_event_set(&event, events, token)
        return epoll_ctl(poller, operation, fd, &event) == 0 ? 0 : -errno
    }

    func wait(poller: Int32, events: UnsafeMutablePointer<epoll_event>, capacity: Int32, timeout: Int32) -> Int32 {
        let count = epoll_wait(poller, events, capacity, timeout)
        return count >= 0 ? count : -errno
    }

    func signal(wakeup: Int32) -> Int32 {
        var one: UInt64 = 1
        return write(wakeup, &one, 8) == 8 ? 0 : -errno
    }

    func clear(wakeup: Int32) -> Int32 {
        var counter: UInt64 = 0
        return read(wakeup, &counter, 8) == 8 ? 0 : -errno
    }

    @inline(__always)
    func accept(listener: Int32, peer: inout RawSocketAddress) -> Int32 {
        peer.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        var length = peer.length
        let fd = withUnsafeMutablePointer(to: &peer.storage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                l4lb_accept4(listener, $0, &length, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
            }
        }
        let code = errno
        peer.length = length
        return fd >= 0 ? fd : -code
    }

    @inline(__always)
    func makeStreamSocket(family: Int32) -> Int32 {
        let fd = socket(family, SocketCalls.streamFlags, 0)
        guard fd >= 0 else { return -errno }
        var one: Int32 = 1
        // Best effort: a socket without them still relays correctly.
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    @inline(__always)
    func connect(_ fd: Int32, to address: RawSocketAddress) -> Int32 {
        let result = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        return result == 0 ? 0 : -errno
    }

    func pendingError(_ fd: Int32) -> Int32 {
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length) == 0 ? code : -errno
    }

    func localAddress(_ fd: Int32) -> RawSocketAddress? {
        var local = RawSocketAddress()
        local.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &local.storage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &local.length) }
        }
        return result == 0 ? local : nil
    }

    @inline(__always)
    func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, capacity: Int) -> Int {
        let count = recv(fd, buffer, capacity, 0)
        return count >= 0 ? count : -Int(errno)
    }

    @inline(__always)
    func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int {
        let count = Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
        return count >= 0 ? count : -Int(errno)
    }

    func shutdownWrite(_ fd: Int32) -> Int32 {
        shutdown(fd, Int32(SHUT_WR)) == 0 ? 0 : -errno
    }

    func lingerZero(_ fd: Int32) -> Int32 {
        var option = linger(l_onoff: 1, l_linger: 0)
        return setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size)) == 0 ? 0 : -errno
    }

    @inline(__always)
    func close(_ fd: Int32) -> Int32 {
        Glibc.close(fd) == 0 ? 0 : -errno
    }

    func unacknowledgedBytes(_ fd: Int32) -> Int {
        max(0, Int(l4lb_unacknowledged_bytes(fd)))
    }

    func unreadBytes(_ fd: Int32) -> Int {
        max(0, Int(l4lb_unread_bytes(fd)))
    }
}
