import Foundation

/// What the operations side may ask of a control plane, whatever carries it: the metrics endpoint
/// and `/status` read this, so they need not know about Redis.
public protocol ControlPlaneStatus: Sendable {
    /// Whether the control plane is connected now.
    var isConnected: Bool { get }
    /// Control messages (and key reads) that changed the pool or the policy.
    var appliedChanges: Int { get }
    /// Control messages and key values refused as bad input.
    var refusedMessages: Int { get }
    /// Successful connects so far (1 after the first, 2 after a reconnect, ...).
    var connectCount: Int { get }
    /// Connections lost and connect attempts that failed, so far: a server that is down or frozen
    /// makes this climb at the reconnect pace.
    var connectionFailures: Int { get }
    /// The version of the shared pool this instance runs (the counter written beside it), if known.
    var poolVersion: Int? { get }
    /// When the control plane last heard from its server (a reply to anything), if ever.
    var lastContact: Date? { get }
}
