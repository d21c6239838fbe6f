import Atomics
import NIOConcurrencyHelpers
import NIOCore

/// Knows every open client connection, so that shutdown can wait for them and then close the rest.
///
/// Each event loop keeps its own set, touched only on that loop, so admitting and forgetting a
/// connection takes no lock; the count across loops is one relaxed atomic.
final class ConnectionRegistry: Sendable {
    private let active = ManagedAtomic<Int>(0)
    private let setsByLoop: [ObjectIdentifier: NIOLoopBoundBox<[ObjectIdentifier: Channel]>]
    private let loops: [any EventLoop]

    init(loops: [any EventLoop]) {
        self.loops = loops
        var sets: [ObjectIdentifier: NIOLoopBoundBox<[ObjectIdentifier: Channel]>] = [:]
        for loop in loops {
            sets[ObjectIdentifier(loop)] = .makeBoxSendingValue(
                [:],
                as: [ObjectIdentifier: Channel].self,
                eventLoop: loop
            )
        }
        self.setsByLoop = sets
    }

    /// Client connections accepted and not yet closed, on all loops.
    var count: Int { self.active.load(ordering: .relaxed) }

    /// Records `channel`, on its event loop, until it closes. Returns false, recording nothing, when
    /// `limit` connections are already open.
    func admit(_ channel: Channel, limit: Int?) -> Bool {
        let before = self.active.loadThenWrappingIncrement(ordering: .relaxed)
        if let limit, before >= limit {
            self.active.wrappingDecrement(ordering: .relaxed)
            return false
        }
        guard let set = self.setsByLoop[ObjectIdentifier(channel.eventLoop)] else {
            preconditionFailure("channel on an event loop the registry was not built for")
        }
        let key = ObjectIdentifier(channel)
        set.value[key] = channel
        channel.closeFuture.assumeIsolated().whenComplete { _ in
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
                for channel in set.value.values {
                    channel.close(promise: nil)
                }
            }.get()
        }
    }
}
