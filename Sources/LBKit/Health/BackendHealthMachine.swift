import NIOCore

/// The health of one backend as a pure state machine: it is told what happened (a connect failed, a
/// probe succeeded, ...) and when, and answers with what to do (retire, restore, probe at a time).
/// Passive signals from client connections and active probes drive the same machine. It never reads
/// a clock or touches a socket, so it is tested with a fake clock.
public struct BackendHealthMachine: Sendable {
    public enum State: Hashable, Sendable {
        /// In the pool and getting clients.
        case healthy
        /// Getting no clients; probed with backoff.
        case retired
        /// Retired, with some but not yet `rise` consecutive successful probes.
        case probing
        /// Taken out of the pool by the operator: no more probes, ever.
        case removed
    }

    public enum FailureKind: Hashable, Sendable {
        case refused
        case timeout
        case reset
    }

    /// What the caller must do after an event.
    public struct Decision: Hashable, Sendable {
        /// The state changed to this one (`retired` or `healthy`), to be applied and reported.
        public var transition: State?
        /// When to probe next; nil means no probe is to be scheduled by this event (one already
        /// scheduled stays, unless the backend was removed).
        public var nextProbe: NIODeadline?

        public init(transition: State?, nextProbe: NIODeadline?) {
            self.transition = transition
            self.nextProbe = nextProbe
        }

        public static let nothing = Decision(transition: nil, nextProbe: nil)
    }

    public private(set) var state = State.healthy
    /// Consecutive failures while healthy (passive or active).
    public private(set) var consecutiveFailures = 0
    /// Consecutive successful probes while retired.
    public private(set) var consecutiveSuccesses = 0
    /// The wait before the next probe of a retired backend; doubles on each failed probe.
    public private(set) var probeInterval: TimeAmount
    private let settings: HealthSettings

    public init(settings: HealthSettings) {
        self.settings = settings
        self.probeInterval = settings.probeInterval
    }

    /// When an active check of a healthy backend should first run; nil without active checks.
    public func firstCheck(at now: NIODeadline) -> NIODeadline? {
        self.settings.checkInterval.map { now + self.settings.jitter($0) }
    }

    /// A client's connect to the backend failed.
    public mutating func connectFailed(_ kind: FailureKind, at now: NIODeadline) -> Decision {
        switch self.state {
        case .healthy:
            self.consecutiveFailures += 1
            let threshold = kind == .refused ? 1 : self.settings.retireAfter
            return self.consecutiveFailures >= threshold ? self.retire(at: now) : .nothing
        case .probing:
            // In panic mode clients still reach retired backends; a failure undoes the climb.
            self.state = .retired
            self.consecutiveSuccesses = 0
            return .nothing
        case .retired, .removed:
            return .nothing
        }
    }

    /// A client's connect to the backend succeeded (reported only after an uncleared failure).
    public mutating func connectSucceeded(at now: NIODeadline) -> Decision {
        switch self.state {
        case .healthy:
            self.consecutiveFailures = 0
            return .nothing
        case .retired, .probing, .removed:
            // Only probes bring a backend back, so that `rise` means what it says.
            return .nothing
        }
    }

    /// A probe (of a retired backend, or an active check of a healthy one) succeeded.
    public mutating func probeSucceeded(at now: NIODeadline) -> Decision {
        switch self.state {
        case .healthy:
            self.consecutiveFailures = 0
            return Decision(transition: nil, nextProbe: self.firstCheck(at: now))
        case .retired, .probing:
            self.consecutiveSuccesses += 1
            guard self.consecutiveSuccesses >= self.settings.rise else {
                self.state = .probing
                // Climbing: probe again at the base interval, not the backed-off one.
                return Decision(transition: nil, nextProbe: now + self.settings.jitter(self.settings.probeInterval))
            }
            self.state = .healthy
            self.consecutiveFailures = 0
            self.consecutiveSuccesses = 0
            self.probeInterval = self.settings.probeInterval
            return Decision(transition: .healthy, nextProbe: self.firstCheck(at: now))
        case .removed:
            return .nothing
        }
    }

    /// A probe failed.
    public mutating func probeFailed(at now: NIODeadline) -> Decision {
        switch self.state {
        case .healthy:
            self.consecutiveFailures += 1
            guard self.consecutiveFailures >= self.settings.fall else {
                return Decision(transition: nil, nextProbe: self.firstCheck(at: now))
            }
            return self.retire(at: now)
        case .retired, .probing:
            self.state = .retired
            self.consecutiveSuccesses = 0
            let doubled = TimeAmount.nanoseconds(self.probeInterval.nanoseconds &* 2)
            self.probeInterval = min(doubled, self.settings.probeMaximumInterval)
            return Decision(transition: nil, nextProbe: now + self.settings.jitter(self.probeInterval))
        case .removed:
            return .nothing
        }
    }

    /// The operator removed the backend from the pool: stop probing it for good. The transition to
    /// `removed` is reported once (the `backend-removed` event).
    public mutating func remove() -> Decision {
        guard self.state != .removed else { return .nothing }
        self.state = .removed
        return Decision(transition: .removed, nextProbe: nil)
    }

    private mutating func retire(at now: NIODeadline) -> Decision {
        self.state = .retired
        self.consecutiveSuccesses = 0
        self.probeInterval = self.settings.probeInterval
        return Decision(transition: .retired, nextProbe: now + self.settings.jitter(self.probeInterval))
    }
}
