import Atomics
import NIOConcurrencyHelpers

/// What the data plane needs to know of a backend's health, readable with one relaxed atomic load
/// per pick. Shared by every pool snapshot that contains the backend, like its counters; written only
/// by the `HealthChecker`.
public final class BackendHealthStatus: Sendable {
    /// @usableFromInline: read on every pick, inlined into the policies (see `BackendCounters`).
    @usableFromInline let retired = ManagedAtomic<Bool>(false)
    private let failing = ManagedAtomic<Bool>(false)
    private let retirements = ManagedAtomic<Int>(0)
    private let recoveries = ManagedAtomic<Int>(0)
    /// Why the last change of state happened ("connect refused", "probe succeeded"); read by
    /// `/status` and the status page, never by the data plane.
    private let lastReason = NIOLockedValueBox<String?>(nil)

    public init() {}

    /// Why the backend was last retired or restored; nil while it never was.
    public var reason: String? { self.lastReason.withLockedValue { $0 } }

    func setReason(_ reason: String) { self.lastReason.withLockedValue { $0 = reason } }

    /// Times this backend was retired, and brought back, since it joined the pool.
    public var retirementCount: Int { self.retirements.load(ordering: .relaxed) }
    public var recoveryCount: Int { self.recoveries.load(ordering: .relaxed) }

    /// Retired backends get no new clients (except in panic mode, when every backend is retired).
    @inlinable public var isRetired: Bool { self.retired.load(ordering: .relaxed) }

    /// Set while a failure has been seen and not yet cleared by a success, so that the data plane
    /// reports successes to the health checker only when they matter, not on every connection.
    var hasUnclearedFailures: Bool { self.failing.load(ordering: .relaxed) }

    func setRetired(_ value: Bool) {
        let before = self.retired.exchange(value, ordering: .relaxed)
        if value && !before { self.retirements.wrappingIncrement(ordering: .relaxed) }
        if !value && before { self.recoveries.wrappingIncrement(ordering: .relaxed) }
    }
    func setFailing(_ value: Bool) { self.failing.store(value, ordering: .relaxed) }
}

/// On when every backend of the pool is retired: then policies may pick retired backends again,
/// because trying a backend that may have recovered beats refusing every client.
public final class PanicSwitch: Sendable {
    /// @usableFromInline: read once per pick, inlined into the policies.
    @usableFromInline let on = ManagedAtomic<Bool>(false)

    public init() {}

    @inlinable public var isOn: Bool { self.on.load(ordering: .relaxed) }

    func set(_ value: Bool) { self.on.store(value, ordering: .relaxed) }
}
