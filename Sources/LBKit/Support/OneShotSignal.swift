import NIOConcurrencyHelpers

/// A one-shot signal that async code can wait for: the control thread's first sync and its end,
/// the listeners closed, the listeners a reload removed.
public final class OneShotSignal: Sendable {
    public init() {}

    private let state = NIOLockedValueBox<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    /// Signals, once; later calls do nothing.
    public func complete() {
        let waiters = self.state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            guard !state.done else { return [] }
            state.done = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    public var isComplete: Bool { self.state.withLockedValue { $0.done } }

    /// Returns once signalled (at once if it already was).
    public func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = self.state.withLockedValue { state -> Bool in
                if state.done { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}
