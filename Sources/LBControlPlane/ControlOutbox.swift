import LBKit
import NIOConcurrencyHelpers

/// What other threads hand the control thread to send to Redis: health events to publish and the
/// instance status to refresh. Bounded, so that a long Redis outage cannot grow it without limit.
final class ControlOutbox: Sendable {
    static let capacity = 1000

    private struct State {
        var events: [String] = []
        var dropped = 0
        var statusInstance: String?
        var status: (@Sendable () -> String)?
    }

    private let state = NIOLockedValueBox(State())
    /// Signalled on every change, so that the control thread sends it without polling.
    private let wakeup: Wakeup

    init(wakeup: Wakeup) {
        self.wakeup = wakeup
    }

    func append(_ event: String) {
        self.state.withLockedValue { state in
            if state.events.count < Self.capacity {
                state.events.append(event)
            } else {
                state.dropped += 1
            }
        }
        self.wakeup.signal()
    }

    /// Takes every queued event, and how many were dropped since the last call.
    func drain() -> (events: [String], dropped: Int) {
        self.state.withLockedValue { state in
            defer {
                state.events = []
                state.dropped = 0
            }
            return (state.events, state.dropped)
        }
    }

    func setStatus(instance: String, _ status: @escaping @Sendable () -> String) {
        self.state.withLockedValue { state in
            state.statusInstance = instance
            state.status = status
        }
        self.wakeup.signal()
    }

    var status: (instance: String, make: @Sendable () -> String)? {
        self.state.withLockedValue { state in
            guard let instance = state.statusInstance, let make = state.status else { return nil }
            return (instance, make)
        }
    }
}
