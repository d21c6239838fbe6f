import Atomics
import Foundation
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Drives one `BackendHealthMachine` per backend of the router's pool: takes passive signals from
/// the data plane, probes retired backends (and, when configured, healthy ones), applies the
/// machines' decisions to the backends' health flags, and switches panic mode.
///
/// Locking contract: every machine lives on one event loop (`loop`) and is touched only there; the
/// data plane reaches it with `execute`, and only on a failure or on the first success after one,
/// never once per healthy connection.
///
/// Time is the loop's (`EventLoop.now`, and its scheduled tasks), so that a test drives the checker
/// on an `EmbeddedEventLoop` by advancing its clock, with a `probe` of its own, and never sleeps.
public final class HealthChecker: Sendable {
    /// Runs one probe of a backend on the loop; the future fails when the probe did.
    public typealias Probe = @Sendable (SocketAddress, any EventLoop, HealthSettings) -> EventLoopFuture<Void>

    private let loop: any EventLoop
    private let core: NIOLoopBoundBox<HealthCheckerCore>
    private let probes = ManagedAtomic<Int>(0)

    /// - Parameters:
    ///   - events: called on `loop` with every state change, to publish it.
    ///   - probe: how a backend is probed; a TCP connect (with the send/expect check) by default.
    public init(
        router: Router,
        settings: HealthSettings,
        loop: any EventLoop,
        instance: String,
        logger: Logger,
        events: (@Sendable (HealthEvent) -> Void)? = nil,
        probe: Probe? = nil
    ) {
        let probe = probe ?? { address, loop, settings in HealthProbe.run(to: address, on: loop, settings: settings) }
        self.loop = loop
        let core = HealthCheckerCore(
            router: router,
            settings: settings,
            loop: loop,
            instance: instance,
            logger: logger,
            events: events,
            probe: probe,
            probes: self.probes
        )
        self.core = .makeBoxSendingValue(core, as: HealthCheckerCore.self, eventLoop: loop)
        let box = self.core
        router.observePoolChanges { pool in
            loop.execute { box.value.synchronize(with: pool) }
        }
        loop.execute { box.value.synchronize(with: router.pool) }
    }

    /// Probes started so far (for tests and metrics).
    public var probesStarted: Int { self.probes.load(ordering: .relaxed) }

    /// A client's connect to `backend` failed in the way `kind` says (the relay's errno, mapped).
    public func connectFailed(_ backend: Backend, kind: BackendHealthMachine.FailureKind) {
        backend.health.setFailing(true)
        let address = backend.address
        let box = self.core
        self.loop.execute { box.value.connectFailed(address, kind: kind) }
    }

    /// A client's connect to `backend` succeeded. Free unless a failure was seen before.
    @inline(__always)
    public func connectSucceeded(_ backend: Backend) {
        guard backend.health.hasUnclearedFailures else { return }
        backend.health.setFailing(false)
        let address = backend.address
        let box = self.core
        self.loop.execute { box.value.connectSucceeded(address) }
    }

    /// Each tracked backend's state, read on the checker's loop.
    public func states() async -> [HostAndPort: BackendHealthMachine.State] {
        let box = self.core
        return (try? await self.loop.submit { box.value.states }.get()) ?? [:]
    }

    /// Cancels every scheduled probe; the checker does nothing afterwards.
    public func stop() async {
        let box = self.core
        try? await self.loop.submit { box.value.stop() }.get()
    }
}

/// The checker's state, confined to its event loop.
final class HealthCheckerCore {
    private struct Entry {
        var machine: BackendHealthMachine
        var backend: Backend
        var scheduled: Scheduled<Void>?
    }

    private let router: Router
    private let settings: HealthSettings
    private let loop: any EventLoop
    private let instance: String
    private let logger: Logger
    private let events: (@Sendable (HealthEvent) -> Void)?
    private let probe: HealthChecker.Probe
    private let probes: ManagedAtomic<Int>
    private var entries: [HostAndPort: Entry] = [:]
    private var stopped = false

    init(
        router: Router,
        settings: HealthSettings,
        loop: any EventLoop,
        instance: String,
        logger: Logger,
        events: (@Sendable (HealthEvent) -> Void)?,
        probe: @escaping HealthChecker.Probe,
        probes: ManagedAtomic<Int>
    ) {
        self.router = router
        self.settings = settings
        self.loop = loop
        self.instance = instance
        self.logger = logger
        self.events = events
        self.probe = probe
        self.probes = probes
    }

    var states: [HostAndPort: BackendHealthMachine.State] {
        self.entries.mapValues(\.machine.state)
    }

    func stop() {
        self.stopped = true
        for entry in self.entries.values { entry.scheduled?.cancel() }
    }

    /// Tracks the backends of `pool`: new ones start healthy (or as their shared status says),
    /// removed ones stop being probed for good, each reported as `backend-removed`.
    func synchronize(with pool: BackendPool) {
        guard !self.stopped else { return }
        let present = Set(pool.backends.map(\.address))
        for (address, entry) in self.entries where !present.contains(address) {
            entry.scheduled?.cancel()
            let wasProbed = entry.machine.state != .healthy
            var machine = entry.machine
            let decision = machine.remove()
            self.entries[address] = nil
            if wasProbed {
                self.logger.info("stopped probing removed backend", metadata: ["backend": "\(address)"])
            }
            if let transition = decision.transition {
                self.events?(
                    HealthEvent(
                        backend: address,
                        state: transition,
                        reason: "removed from the pool",
                        instance: self.instance,
                        time: Date()
                    )
                )
            }
        }
        for backend in pool.backends {
            if var entry = self.entries[backend.address] {
                entry.backend = backend
                self.entries[backend.address] = entry
                continue
            }
            var entry = Entry(machine: BackendHealthMachine(settings: self.settings), backend: backend, scheduled: nil)
            backend.health.setRetired(false)
            if let first = entry.machine.firstCheck(at: self.loop.now) {
                entry.scheduled = self.schedule(probeOf: backend.address, at: first)
            }
            self.entries[backend.address] = entry
        }
        self.updatePanic()
    }

    func connectFailed(_ address: HostAndPort, kind: BackendHealthMachine.FailureKind) {
        guard var entry = self.entries[address] else { return }
        let decision = entry.machine.connectFailed(kind, at: self.loop.now)
        self.entries[address] = entry
        self.apply(decision, to: address, reason: "connect \(kind)")
    }

    func connectSucceeded(_ address: HostAndPort) {
        guard var entry = self.entries[address] else { return }
        let decision = entry.machine.connectSucceeded(at: self.loop.now)
        self.entries[address] = entry
        self.apply(decision, to: address, reason: "connect succeeded")
    }

    private func apply(_ decision: BackendHealthMachine.Decision, to address: HostAndPort, reason: String) {
        guard !self.stopped, var entry = self.entries[address] else { return }
        if let next = decision.nextProbe {
            entry.scheduled?.cancel()
            entry.scheduled = self.schedule(probeOf: address, at: next)
            self.entries[address] = entry
        }
        guard let transition = decision.transition else { return }
        entry.backend.health.setRetired(transition != .healthy)
        entry.backend.health.setReason(reason)
        if transition == .healthy {
            self.logger.info("backend restored", metadata: ["backend": "\(address)", "reason": "\(reason)"])
        } else {
            self.logger.warning(
                "backend retired",
                metadata: [
                    "backend": "\(address)", "reason": "\(reason)", "probe-in": "\(entry.machine.probeInterval)",
                ]
            )
        }
        self.events?(HealthEvent(backend: address, state: transition, reason: reason, instance: self.instance))
        self.updatePanic()
    }

    private func schedule(probeOf address: HostAndPort, at deadline: NIODeadline) -> Scheduled<Void> {
        self.loop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.runProbe(of: address)
        }
    }

    private func runProbe(of address: HostAndPort) {
        guard !self.stopped, let entry = self.entries[address] else { return }
        self.probes.wrappingIncrement(ordering: .relaxed)
        self.probe(entry.backend.socketAddress, self.loop, self.settings)
            .assumeIsolated()
            .whenComplete { result in
                guard var entry = self.entries[address] else { return }
                let now = self.loop.now
                let decision: BackendHealthMachine.Decision
                let reason: String
                switch result {
                case .success:
                    decision = entry.machine.probeSucceeded(at: now)
                    reason = "probe succeeded"
                case .failure(let error) where Self.isLocalShortage(error):
                    // l4lb could not open the probe's socket: nothing was learned of the backend, and
                    // it is charged nothing. The probe runs again after the same interval.
                    self.shortageLog.warning(
                        self.logger,
                        "health probe not run: \(Describe.error(error)); the backend is not charged",
                        metadata: ["backend": "\(address)"]
                    )
                    let interval =
                        entry.machine.state == .healthy
                        ? (self.settings.checkInterval ?? entry.machine.probeInterval) : entry.machine.probeInterval
                    entry.scheduled = self.schedule(probeOf: address, at: now + interval)
                    self.entries[address] = entry
                    return
                case .failure(let error):
                    decision = entry.machine.probeFailed(at: now)
                    reason = "probe failed: \(Describe.error(error))"
                }
                self.entries[address] = entry
                self.apply(decision, to: address, reason: reason)
            }
    }

    private let shortageLog = RateLimitedLog()

    /// Whether a probe failed for want of something of l4lb's own: descriptors, kernel memory or a
    /// local port. The same errors on the relay are never charged to a backend either.
    static func isLocalShortage(_ error: any Error) -> Bool {
        guard let error = error as? IOError else { return false }
        return [EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL, EADDRINUSE, EAGAIN].contains(error.errnoCode)
    }

    /// Panic mode is on exactly while every backend of a non-empty pool is retired.
    private func updatePanic() {
        let pool = self.router.pool
        let panic = !pool.isEmpty && pool.backends.allSatisfy(\.isRetired)
        guard panic != self.router.panic.isOn else { return }
        self.router.panic.set(panic)
        if panic {
            self.logger.warning("panic mode: every backend is retired; clients are tried on all of them")
        } else {
            self.logger.info("left panic mode")
        }
    }
}
