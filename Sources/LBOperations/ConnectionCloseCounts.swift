import Atomics
import LBKit

/// Closed connections counted by why they ended, for `l4lb_connections_closed_total`: the metrics'
/// connection observer, one relaxed increment per close.
public final class ConnectionCloseCounts: ConnectionObserver {
    /// Built once: `allCases` makes a new array on every use, which a close must not pay for.
    private static let reasons = ConnectionCloseReason.allCases
    /// Indexed like `reasons`.
    private let counts = ConnectionCloseCounts.reasons.map { _ in ManagedAtomic<Int>(0) }

    public init() {}

    public func connectionClosed(_ record: ConnectionRecord) {
        self.counts[Self.index(of: record.reason)].wrappingIncrement(ordering: .relaxed)
    }

    public func count(_ reason: ConnectionCloseReason) -> Int {
        self.counts[Self.index(of: reason)].load(ordering: .relaxed)
    }

    private static func index(of reason: ConnectionCloseReason) -> Int {
        Self.reasons.firstIndex(of: reason) ?? 0
    }
}
