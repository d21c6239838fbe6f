import Atomics
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Closes listening sockets that a reload removed once every relay loop has stopped watching them,
/// so that no loop accepts on a descriptor that was closed (and perhaps reused meanwhile).
final class ListenerRelease: Sendable {
    private let remaining: ManagedAtomic<Int>
    private let fds: [Int32]
    private let waiters = NIOLockedValueBox<(done: Bool, continuations: [CheckedContinuation<Void, Never>])>(
        (false, [])
    )

    init(loops: Int, fds: [Int32]) {
        self.remaining = ManagedAtomic(loops)
        self.fds = fds
    }

    /// One loop is done; the last closes the sockets and wakes whoever waits.
    func loopDone() {
        guard self.remaining.wrappingDecrementThenLoad(ordering: .acquiringAndReleasing) == 0 else { return }
        for fd in self.fds { close(fd) }
        let continuations = self.waiters.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.done = true
            defer { state.continuations = [] }
            return state.continuations
        }
        for continuation in continuations { continuation.resume() }
    }

    func waitUntilDone() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = self.waiters.withLockedValue { state -> Bool in
                if !state.done { state.continuations.append(continuation) }
                return state.done
            }
            if done { continuation.resume() }
        }
    }
}
