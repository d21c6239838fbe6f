import Atomics
import LBKit

/// What the control plane has done, for logs, tests and the metrics endpoint.
public final class ControlPlaneStatistics: ControlPlaneStatus {
    private let applied = ManagedAtomic<Int>(0)
    private let refused = ManagedAtomic<Int>(0)
    private let connected = ManagedAtomic<Bool>(false)
    private let connects = ManagedAtomic<Int>(0)

    public init() {}

    /// Control messages (and key reads) that changed the pool or the policy.
    public var appliedChanges: Int { self.applied.load(ordering: .relaxed) }
    /// Control messages and key values refused as bad input.
    public var refusedMessages: Int { self.refused.load(ordering: .relaxed) }
    /// Whether both Redis connections are up now.
    public var isConnected: Bool { self.connected.load(ordering: .relaxed) }
    /// Successful connects to Redis so far (1 after the first, 2 after a reconnect, ...).
    public var connectCount: Int { self.connects.load(ordering: .relaxed) }

    func recordApplied() { self.applied.wrappingIncrement(ordering: .relaxed) }
    func recordRefused() { self.refused.wrappingIncrement(ordering: .relaxed) }
    func recordConnected() {
        self.connects.wrappingIncrement(ordering: .relaxed)
        self.connected.store(true, ordering: .relaxed)
    }
    func recordDisconnected() { self.connected.store(false, ordering: .relaxed) }
}
