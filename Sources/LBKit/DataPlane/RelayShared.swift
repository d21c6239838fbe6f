import Atomics
import Logging
import NIOConcurrencyHelpers

/// What every relay loop shares: the immutable parts of the data plane, built once at start, and the
/// counters across loops. One object, so that a loop holds one reference for all of it.
final class RelayShared: Sendable {
    let router: Router
    let health: HealthChecker
    let logger: Logger
    /// Told of each closed connection (the access log, the metrics).
    let observers: [any ConnectionObserver]
    /// The PROXY protocol header to send to backends first, when `--send-proxy-protocol` is on.
    let sendProxyProtocol: ProxyProtocolEncoder.Version?
    let machineSettings: RelayMachine.Settings
    /// Client bytes kept while a backend connects (then reading pauses).
    let maxPendingBytes: Int
    let proxyHeaderTimeout: Duration?

    /// Client connections open now, on every loop; with `--max-connections`, a slot is taken here
    /// before `accept4`, so that no loop accepts past the limit.
    private let active = ManagedAtomic<Int>(0)
    private let accepted = ManagedAtomic<Int>(0)
    private let pauses = ManagedAtomic<Int>(0)
    private let handOvers = ManagedAtomic<Int>(0)
    private let staleEvents = ManagedAtomic<Int>(0)
    private let noFreePorts = ManagedAtomic<Int>(0)
    let limit: Int?
    /// Loops whose listeners are paused at the limit, to wake when a slot frees. `anyPaused` is
    /// changed only under this lock, so a loop that pauses can never have its flag cleared by a wake
    /// that took the list before it joined.
    private let pausedLoops = NIOLockedValueBox<[any RelayCommandTarget]>([])
    private let anyPaused = ManagedAtomic<Bool>(false)
    /// Relay loops still watching the listening sockets.
    private let loopsAccepting = ManagedAtomic<Int>(0)
    private let idleWaiters = NIOLockedValueBox<[ResumeOnce]>([])

    let noBackendLog = RateLimitedLog()
    let connectFailureLog = RateLimitedLog()
    let proxyHeaderLog = RateLimitedLog()
    let resourceLog = RateLimitedLog()
    let portLog = RateLimitedLog()

    init(
        router: Router,
        health: HealthChecker,
        logger: Logger,
        observers: [any ConnectionObserver],
        configuration: ProxyConfiguration
    ) {
        self.router = router
        self.health = health
        self.logger = logger
        self.observers = observers
        self.sendProxyProtocol = configuration.sendProxyProtocol
        self.machineSettings = RelayMachine.Settings(
            waitsForProxyHeader: configuration.acceptProxyProtocol != nil,
            connectAttempts: max(1, configuration.connectAttempts),
            retryOnReset: configuration.retryOnReset,
            maxKeptBytes: configuration.maxPendingBytes
        )
        self.maxPendingBytes = configuration.maxPendingBytes
        self.proxyHeaderTimeout = configuration.acceptProxyProtocol.map { .nanoseconds($0.nanoseconds) }
        self.limit = configuration.maxConnections
    }

    var activeCount: Int { self.active.load(ordering: .relaxed) }
    var acceptedCount: Int { self.accepted.load(ordering: .relaxed) }
    var pauseCount: Int { self.pauses.load(ordering: .relaxed) }
    var handOverCount: Int { self.handOvers.load(ordering: .relaxed) }
    var staleEventCount: Int { self.staleEvents.load(ordering: .relaxed) }
    var noFreePortsCount: Int { self.noFreePorts.load(ordering: .relaxed) }

    /// An epoll event for a socket closed earlier in its batch was dropped (`RelayToken`).
    func countStaleEvent() {
        self.staleEvents.wrappingIncrement(ordering: .relaxed)
    }

    /// A backend connect found no free local port.
    func countNoFreePorts() {
        self.noFreePorts.wrappingIncrement(ordering: .relaxed)
    }

    /// Takes a connection slot before an accept; false at `--max-connections`.
    func reserveSlot() -> Bool {
        guard let limit = self.limit else {
            self.active.wrappingIncrement(ordering: .relaxed)
            return true
        }
        var current = self.active.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = self.active.weakCompareExchange(
                expected: current,
                desired: current + 1,
                ordering: .relaxed
            )
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Gives back a slot: the accept found nobody, or a connection closed.
    func releaseSlot() {
        // Sequentially consistent, with the pausing loop's store of `anyPaused` and load of
        // `active` (`loopPaused`): of the two, at least one sees the other's write, so a slot
        // freed while a loop pauses is never missed by both.
        let left = self.active.wrappingDecrementThenLoad(ordering: .sequentiallyConsistent)
        if self.anyPaused.load(ordering: .sequentiallyConsistent) {
            self.wakePausedLoops()
        }
        if left == 0 {
            let waiters = self.idleWaiters.withLockedValue { waiters in
                defer { waiters = [] }
                return waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    /// Sets how many loops share the listening sockets.
    func listenersShared(by loops: Int) {
        self.loopsAccepting.store(loops, ordering: .relaxed)
    }

    /// A loop stopped watching the listening sockets; true for the last one, which closes them and
    /// then calls `listenersClosed`.
    func loopStoppedAccepting() -> Bool {
        self.loopsAccepting.wrappingDecrementThenLoad(ordering: .acquiringAndReleasing) == 0
    }

    private let closedListeners = OneShotSignal()

    /// The listening sockets are closed: a client connecting now is refused by the kernel.
    func listenersClosed() {
        self.closedListeners.complete()
    }

    /// Returns once the listening sockets are closed.
    func waitUntilListenersClosed() async {
        await self.closedListeners.wait()
    }

    func countAccepted() {
        self.accepted.wrappingIncrement(ordering: .relaxed)
    }

    /// A client accepted by one loop was handed to another (`AcceptBalance`).
    func countHandOver() {
        self.handOvers.wrappingIncrement(ordering: .relaxed)
    }

    /// `loop` stopped accepting at the limit. Re-checks after registering, so that a slot freed
    /// meanwhile is not missed; true if the loop should accept again at once (it is then no longer
    /// registered).
    func loopPaused(_ loop: any RelayCommandTarget) -> Bool {
        self.pauses.wrappingIncrement(ordering: .relaxed)
        self.pausedLoops.withLockedValue { loops in
            loops.append(loop)
            self.anyPaused.store(true, ordering: .sequentiallyConsistent)
        }
        guard let limit = self.limit, self.active.load(ordering: .sequentiallyConsistent) < limit else { return false }
        self.pausedLoops.withLockedValue { loops in
            loops.removeAll { $0 === loop }
            if loops.isEmpty { self.anyPaused.store(false, ordering: .sequentiallyConsistent) }
        }
        return true
    }

    private func wakePausedLoops() {
        let loops = self.pausedLoops.withLockedValue { loops in
            defer { loops = [] }
            self.anyPaused.store(false, ordering: .sequentiallyConsistent)
            return loops
        }
        for loop in loops {
            // A loop that has ended takes no command, and needs none.
            loop.post(.resumeAccepting)
        }
    }

    /// Whether a loop is registered as paused (for the tests).
    var hasPausedLoops: Bool { self.anyPaused.load(ordering: .sequentiallyConsistent) }

    /// Returns once no client connection is open (at once if none is), or after `timeout`.
    func waitUntilIdle(timeout: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiter = ResumeOnce(continuation)
            let idle = self.idleWaiters.withLockedValue { waiters -> Bool in
                if self.active.load(ordering: .relaxed) == 0 { return true }
                waiters.append(waiter)
                return false
            }
            if idle {
                waiter.resume()
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                waiter.resume()
            }
        }
    }
}

/// A continuation that two parties may race to resume (the last connection closing, a timeout):
/// the first wins, the second does nothing.
final class ResumeOnce: Sendable {
    private let continuation = NIOLockedValueBox<CheckedContinuation<Void, Never>?>(nil)

    init(_ continuation: CheckedContinuation<Void, Never>) {
        self.continuation.withLockedValue { $0 = continuation }
    }

    func resume() {
        let taken = self.continuation.withLockedValue { stored in
            defer { stored = nil }
            return stored
        }
        taken?.resume()
    }
}
