import Foundation

/// One change of a backend's health state, as logged and as published on the `events` channel.
public struct HealthEvent: Sendable, Hashable {
    public var backend: HostAndPort
    public var state: BackendHealthMachine.State
    public var reason: String
    public var instance: String
    public var time: Date

    public init(
        backend: HostAndPort,
        state: BackendHealthMachine.State,
        reason: String,
        instance: String,
        time: Date = Date()
    ) {
        self.backend = backend
        self.state = state
        self.reason = reason
        self.instance = instance
        self.time = time
    }

    /// `{"event":"backend-retired","backend":"127.0.0.1:9001","reason":"...","instance":"...","time":"..."}`
    public var json: String {
        let event: String
        switch self.state {
        case .healthy: event = "backend-restored"
        case .retired, .probing: event = "backend-retired"
        case .removed: event = "backend-removed"
        }
        let fields: [String: String] = [
            "event": event,
            "backend": self.backend.description,
            "reason": self.reason,
            "instance": self.instance,
            "time": ISO8601DateFormatter().string(from: self.time),
        ]
        return JSONText.encode(fields)
    }
}
