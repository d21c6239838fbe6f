import Atomics

#if canImport(Glibc)
import Glibc
#endif

/// Closes listening sockets that a reload removed once every relay loop has stopped watching them,
/// so that no loop accepts on a descriptor that was closed (and perhaps reused meanwhile).
final class ListenerRelease: Sendable {
    private let remaining: ManagedAtomic<Int>
    private let fds: [Int32]
    private let done = OneShotSignal()

    init(loops: Int, fds: [Int32]) {
        self.remaining = ManagedAtomic(loops)
        self.fds = fds
    }

    /// One loop is done; the last closes the sockets and wakes whoever waits.
    func loopDone() {
        guard self.remaining.wrappingDecrementThenLoad(ordering: .acquiringAndReleasing) == 0 else { return }
        for fd in self.fds { close(fd) }
        self.done.complete()
    }

    func waitUntilDone() async {
        await self.done.wait()
    }
}
