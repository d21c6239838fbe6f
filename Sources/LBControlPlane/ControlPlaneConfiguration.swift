import LBKit
import NIOCore

/// How the control plane reaches Redis and what it calls things there.
public struct ControlPlaneConfiguration: Sendable {
    public var endpoint: RedisEndpoint
    public var names: RedisNames
    /// Bound on connecting and on each command's reply.
    public var commandTimeout: TimeAmount
    /// First wait before reconnecting after Redis is lost; doubles up to `maximumReconnectDelay`.
    public var initialReconnectDelay: TimeAmount
    public var maximumReconnectDelay: TimeAmount
    /// How often the instance's status key is rewritten.
    public var statusInterval: TimeAmount = .seconds(5)
    /// How long the status key lives without a rewrite, so that a dead instance's status expires;
    /// three intervals (at least a second) unless set.
    public var statusTimeToLive: TimeAmount?
    /// This instance's name: it answers explain requests addressed to it.
    public var instance: String?
    /// Percent of new clients a shadow policy installed through Redis is asked about.
    public var shadowSamplePercent = 100

    public init(
        endpoint: RedisEndpoint,
        names: RedisNames = RedisNames(),
        commandTimeout: TimeAmount = .seconds(3),
        initialReconnectDelay: TimeAmount = .milliseconds(100),
        maximumReconnectDelay: TimeAmount = .seconds(5)
    ) {
        self.endpoint = endpoint
        self.names = names
        self.commandTimeout = commandTimeout
        self.initialReconnectDelay = initialReconnectDelay
        self.maximumReconnectDelay = maximumReconnectDelay
    }
}
