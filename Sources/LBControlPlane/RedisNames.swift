/// The keys and channels of the control plane, under an optional prefix (`P:serverPool`, ...) so
/// that one Redis can serve several independent l4lb clusters.
public struct RedisNames: Hashable, Sendable {
    public let prefix: String?

    public init(prefix: String? = nil) {
        self.prefix = (prefix?.isEmpty ?? true) ? nil : prefix
    }

    private func name(_ base: String) -> String {
        self.prefix.map { "\($0):\(base)" } ?? base
    }

    public var serverPoolKey: String { self.name("serverPool") }
    public var policyKey: String { self.name("policy") }
    /// The shadow policy's spec, while one is installed (`setShadowPolicy`).
    public var shadowPolicyKey: String { self.name("shadowPolicy") }
    /// The list an instance pushes its answer to an explain request onto.
    public func explainReplyKey(id: String) -> String { self.name("explain:\(id)") }
    /// A hash beside `serverPool`: `version` (one more at every change l4lb writes) and
    /// `changed_at` (the server's time of that change, in seconds).
    public var serverPoolMetaKey: String { self.name("serverPool:meta") }

    /// The keyspace-notification channel of `serverPool` in `database`: it carries every write of
    /// the key, l4lb's or anyone's, when the server has notify-keyspace-events on.
    public func keyspaceChannel(database: Int) -> String {
        "__keyspace@\(database)__:\(self.serverPoolKey)"
    }
    public func channel(_ channel: ControlChannel) -> String { self.name(channel.rawValue) }
    /// The channel health events are published on.
    public var eventsChannel: String { self.name("events") }
    /// The per-instance status key, refreshed with a TTL so that a dead instance's status expires.
    public func statusKey(instance: String) -> String { self.name("status:\(instance)") }

    /// The control channel a subscription message came from, if it is one of ours.
    public func controlChannel(named name: String) -> ControlChannel? {
        ControlChannel.allCases.first { self.channel($0) == name }
    }
}
