import Atomics
import Foundation
import LBKit

/// What the control plane has done, for logs, tests and the metrics endpoint.
public final class ControlPlaneStatistics: ControlPlaneStatus {
    private let applied = ManagedAtomic<Int>(0)
    private let refused = ManagedAtomic<Int>(0)
    private let connected = ManagedAtomic<Bool>(false)
    private let connects = ManagedAtomic<Int>(0)
    private let failures = ManagedAtomic<Int>(0)
    /// -1 while unknown.
    private let version = ManagedAtomic<Int>(-1)
    /// Milliseconds since 1970; 0 before the first contact.
    private let contact = ManagedAtomic<Int64>(0)

    public init() {}

    /// Control messages (and key reads) that changed the pool or the policy.
    public var appliedChanges: Int { self.applied.load(ordering: .relaxed) }
    /// Control messages and key values refused as bad input.
    public var refusedMessages: Int { self.refused.load(ordering: .relaxed) }
    /// Whether both Redis connections are up now.
    public var isConnected: Bool { self.connected.load(ordering: .relaxed) }
    /// Successful connects to Redis so far (1 after the first, 2 after a reconnect, ...).
    public var connectCount: Int { self.connects.load(ordering: .relaxed) }
    public var connectionFailures: Int { self.failures.load(ordering: .relaxed) }

    public var poolVersion: Int? {
        let version = self.version.load(ordering: .relaxed)
        return version < 0 ? nil : version
    }

    public var lastContact: Date? {
        let milliseconds = self.contact.load(ordering: .relaxed)
        return milliseconds == 0 ? nil : Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    func recordPoolVersion(_ version: Int) { self.version.store(version, ordering: .relaxed) }
    func recordContact() {
        self.contact.store(Int64(Date().timeIntervalSince1970 * 1000), ordering: .relaxed)
    }

    func recordApplied() { self.applied.wrappingIncrement(ordering: .relaxed) }
    func recordRefused() { self.refused.wrappingIncrement(ordering: .relaxed) }
    func recordConnected() {
        self.connects.wrappingIncrement(ordering: .relaxed)
        self.connected.store(true, ordering: .relaxed)
    }
    func recordDisconnected() {
        self.failures.wrappingIncrement(ordering: .relaxed)
        self.connected.store(false, ordering: .relaxed)
    }
}
