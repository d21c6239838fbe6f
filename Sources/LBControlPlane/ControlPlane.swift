import Atomics
import Foundation
import LBKit
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Keeps the router in step with Redis: applies `addServer`, `removeServer` and `setPolicy`
/// messages, writes the resulting pool and policy back to their keys, and on every (re)connect
/// re-reads the keys so that nothing published while it was cut off is lost.
///
/// All Redis I/O happens on one dedicated thread, never on the threads that relay traffic; the
/// data plane sees the results only through the router's atomic table swap. This type is the
/// thread-safe handle; `ControlLoop` is the state confined to that thread.
public final class ControlPlane: Sendable {
    public let statistics = ControlPlaneStatistics()
    private let configuration: ControlPlaneConfiguration
    private let router: Router
    private let policies: PolicyRegistry
    private let initialPolicy: PolicySpec
    private let initialShadow: PolicySpec?
    private let logger: Logger
    private let stopRequested = ManagedAtomic<Bool>(false)
    private let started = ManagedAtomic<Bool>(false)
    private let firstSync = OneShotSignal()
    private let finished = OneShotSignal()
    private let wakeup: Wakeup
    private let outbox: ControlOutbox
    /// With a Sentinel URL: follows +switch-master.
    private let sentinelWatcher: SentinelWatcher

    /// - Parameter initialPolicy: the spec of the policy the router starts with (from `--policy`);
    ///   seeds the `policy` key when it is missing.
    public init(
        configuration: ControlPlaneConfiguration,
        router: Router,
        policies: PolicyRegistry,
        initialPolicy: PolicySpec,
        initialShadow: PolicySpec? = nil,
        logger: Logger
    ) {
        self.initialShadow = initialShadow
        self.configuration = configuration
        self.router = router
        self.policies = policies
        self.initialPolicy = initialPolicy
        self.logger = logger
        self.wakeup = Wakeup()
        self.outbox = ControlOutbox(wakeup: self.wakeup)
        self.sentinelWatcher = SentinelWatcher(
            endpoint: configuration.endpoint,
            timeout: configuration.commandTimeout,
            logger: logger,
            wakeup: self.wakeup
        )
    }

    /// Queues `json` for publication on the `events` channel; the control thread, woken, sends it at
    /// once while Redis is connected; dropped (with the count logged) when the queue is full.
    public func publishEvent(_ json: String) {
        self.outbox.append(json)
    }

    /// Reports this instance's state in the key `status:<instance>` (with the prefix), refreshed
    /// every few seconds with a TTL, so that `redis-cli keys 'status:*'` lists live instances.
    public func reportStatus(instance: String, _ status: @escaping @Sendable () -> String) {
        self.outbox.setStatus(instance: instance, status)
    }

    /// Starts the control thread and waits until its first attempt to reach Redis has read the keys
    /// or failed (bounded by the command timeout), so the proxy starts with Redis's pool when it can.
    public func start() async {
        guard self.started.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        let loop = ControlLoop(
            configuration: self.configuration,
            router: self.router,
            policies: self.policies,
            policy: self.initialPolicy,
            shadow: self.initialShadow,
            logger: self.logger,
            statistics: self.statistics,
            outbox: self.outbox,
            wakeup: self.wakeup,
            masterSwitched: self.sentinelWatcher.switched,
            changes: { [changeObservers] line in
                for observer in changeObservers.withLockedValue({ $0 }) { observer(line) }
            }
        )
        self.sentinelWatcher.start()
        let stopRequested = self.stopRequested
        let firstSync = self.firstSync
        let finished = self.finished
        let thread = Thread {
            loop.run(shouldStop: { stopRequested.load(ordering: .relaxed) }, firstSyncDone: { firstSync.complete() })
            finished.complete()
        }
        thread.name = "l4lb-control-plane"
        thread.start()
        await firstSync.wait()
    }

    private let changeObservers = NIOLockedValueBox<[@Sendable (String) -> Void]>([])

    /// Calls `observer` with a line for every change applied and every input refused (the status
    /// page's event list); on the control thread, so it must not block.
    public func observeChanges(_ observer: @escaping @Sendable (String) -> Void) {
        self.changeObservers.withLockedValue { $0.append(observer) }
    }

    /// With a Sentinel URL: whether a sentinel's `+switch-master` announcements are being followed.
    public var isFollowingSentinel: Bool { self.sentinelWatcher.isSubscribed }

    /// Whether the control thread runs: from `start()` until `stop()` has returned.
    public var isRunning: Bool { self.started.load(ordering: .relaxed) && !self.finished.isComplete }

    /// Asks the control thread to stop and waits until it has closed its connections; returns at
    /// once if it never started.
    public func stop() async {
        self.stopRequested.store(true, ordering: .relaxed)
        self.sentinelWatcher.stop()
        self.wakeup.signal()
        guard self.started.load(ordering: .relaxed) else { return }
        await self.finished.wait()
    }
}
