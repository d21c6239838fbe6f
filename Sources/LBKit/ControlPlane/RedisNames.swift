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
    public func channel(_ channel: ControlChannel) -> String { self.name(channel.rawValue) }

    /// The control channel a subscription message came from, if it is one of ours.
    public func controlChannel(named name: String) -> ControlChannel? {
        ControlChannel.allCases.first { self.channel($0) == name }
    }
}
