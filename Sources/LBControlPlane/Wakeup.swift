import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// An eventfd that other threads signal to wake the control thread out of its wait on Redis: for a
/// stop request, a health event to publish, or a new status to report. The control thread waits on
/// it and on its Redis socket together, so it sleeps until something happens instead of waking on a
/// timer to look.
final class Wakeup: Sendable {
    let fd: Int32

    init() {
        self.fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
    }

    deinit {
        if self.fd >= 0 { close(self.fd) }
    }

    func signal() {
        var one: UInt64 = 1
        _ = write(self.fd, &one, MemoryLayout<UInt64>.size)
    }

    /// Clears the signals so far.
    func reset() {
        var count: UInt64 = 0
        _ = read(self.fd, &count, MemoryLayout<UInt64>.size)
    }

    /// Waits until signalled or `milliseconds` passed (-1: no limit); true if signalled.
    @discardableResult
    func wait(milliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, milliseconds) > 0
    }
}
