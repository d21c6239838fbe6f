import Foundation
import LBKit
import NIOConcurrencyHelpers

/// The last health and control-plane events, newest last, for the status page: bounded, so a
/// flapping backend cannot grow it.
public final class RecentEvents: Sendable {
    public static let capacity = 50

    public struct Event: Codable, Sendable, Equatable {
        public var time: String
        public var kind: String
        public var text: String
    }

    private let events = NIOLockedValueBox<[Event]>([])

    public init() {}

    public func record(kind: String, _ text: String, at time: Date = Date()) {
        let event = Event(time: Timestamp.iso8601(time), kind: kind, text: text)
        self.events.withLockedValue { events in
            events.append(event)
            if events.count > Self.capacity { events.removeFirst(events.count - Self.capacity) }
        }
    }

    public func record(_ event: HealthEvent) {
        let what: String
        switch event.state {
        case .healthy: what = "restored"
        case .retired, .probing: what = "retired"
        case .removed: what = "removed"
        }
        self.record(kind: "health", "\(event.backend) \(what): \(event.reason)", at: event.time)
    }

    public var all: [Event] { self.events.withLockedValue { $0 } }
}
