import Atomics
import NIOConcurrencyHelpers
import NIOCore

/// Knows every open client connection, so that shutdown can wait for them and then close the rest.
///
/// Each event loop keeps its own set, touched only on that loop, so admitting and forgetting a
/// connection takes no lock; the count across loops is one relaxed atomic.
final class ConnectionRegistry: Sendable {
    struct Entry {
        var channel: Channel
        var outcome: ConnectionOutcome
    }

    private let active = ManagedAtomic<Int>(0)
    private let accepted = ManagedAtomic<Int>(0)
    private let refused = ManagedAtomic<Int>(0)
    private let setsByLoop: [ObjectIdentifier: NIOLoopBoundBox<[ObjectIdentifier: Entry]>]
    private let loops: [any EventLoop]

    init(loops: [any EventLoop]) {
        self.loops = loops
        var sets: [ObjectIdentifier: NIOLoopBoundBox<[ObjectIdentifier: Entry]>] = [:]
        for loop in loops {
            sets[ObjectIdentifier(loop)] = .makeBoxSendingValue(
                [:],
                as: [ObjectIdentifier: Entry].self,
                eventLoop: loop
            )
        }
        self.setsByLoop = sets
    }

    /// Client connections accepted and not yet closed, on all loops.
    var count: Int { self.active.load(ordering: .relaxed) }
    var acceptedTotal: Int { self.accepted.load(ordering: .relaxed) }
    var refusedTotal: Int { self.refused.load(ordering: .relaxed) }

    /// Records `channel`, on its event loop, until it closes. Returns false, recording nothing, when
    /// `limit` connections are already open.
    func admit(_ channel: Channel, outcome: ConnectionOutcome, limit: Int?) -> Bool {
        let before = self.active.loadThenWrappingIncrement(ordering: .relaxed)
        if let limit, before >= limit {
            self.active.wrappingDecrement(ordering: .relaxed)
            self.refused.wrappingIncrement(ordering: .relaxed)
            return false
        }
        self.accepted.wrappingIncrement(ordering: .relaxed)
        guard let set = self.setsByLoop[ObjectIdentifier(channel.eventLoop)] else {
            preconditionFailure("channel on an event loop the registry was not built for")
        }
        let key = ObjectIdentifier(channel)
        set.value[key] = Entry(channel: channel, outcome: outcome)
        channel.closeFuture.assumeIsolated().whenComplete { _ in
            outcome.whenClosed?()
            outcome.whenClosed = nil
            set.value.removeValue(forKey: key)
            self.active.wrappingDecrement(ordering: .relaxed)
        }
        return true
    }

    /// Closes every open connection and returns once each loop has issued its closes.
    func closeAll() async {
        for loop in self.loops {
            guard let set = self.setsByLoop[ObjectIdentifier(loop)] else { continue }
            try? await loop.submit {
                for entry in set.value.values {
                    entry.outcome.record(.closedByL4LB)
                    entry.channel.close(promise: nil)
                }
            }.get()
        }
    }
}
