import NIOCore

/// How l4lb decides that a backend is dead and when it is back. Defaults follow HAProxy's
/// `inter 1s fall 3 rise 2`, with probing of retired backends backing off to 30 s.
public struct HealthSettings: Sendable {
    /// Consecutive connect timeouts or resets that retire a backend. A refused connect is certain
    /// and retires at once.
    public var retireAfter: Int
    /// Consecutive successful probes that bring a retired backend back.
    public var rise: Int
    /// Consecutive failed active checks that retire a healthy backend.
    public var fall: Int
    /// First wait before probing a retired backend; doubles after each failed probe.
    public var probeInterval: TimeAmount
    public var probeMaximumInterval: TimeAmount
    /// Interval of active checks of healthy backends; nil means only retired backends are probed.
    public var checkInterval: TimeAmount?
    /// Bound on a probe's connect (and its send/expect exchange).
    public var probeTimeout: TimeAmount
    /// Bytes a probe sends once connected, and a string the reply must contain; nil means a TCP
    /// connect alone is the check.
    public var probeSend: String?
    public var probeExpect: String?
    /// Spreads probe times (by default +-10%) so that instances and backends do not probe in step.
    public var jitter: @Sendable (TimeAmount) -> TimeAmount

    public init(
        retireAfter: Int = 3,
        rise: Int = 2,
        fall: Int = 3,
        probeInterval: TimeAmount = .seconds(1),
        probeMaximumInterval: TimeAmount = .seconds(30),
        checkInterval: TimeAmount? = nil,
        probeTimeout: TimeAmount = .seconds(3),
        probeSend: String? = nil,
        probeExpect: String? = nil,
        jitter: @escaping @Sendable (TimeAmount) -> TimeAmount = HealthSettings.tenPercentJitter
    ) {
        self.retireAfter = retireAfter
        self.rise = rise
        self.fall = fall
        self.probeInterval = probeInterval
        self.probeMaximumInterval = probeMaximumInterval
        self.checkInterval = checkInterval
        self.probeTimeout = probeTimeout
        self.probeSend = probeSend
        self.probeExpect = probeExpect
        self.jitter = jitter
    }

    public static let tenPercentJitter: @Sendable (TimeAmount) -> TimeAmount = { interval in
        .nanoseconds(Int64(Double(interval.nanoseconds) * Double.random(in: 0.9...1.1)))
    }
}
