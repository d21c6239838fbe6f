/// Admits at most `limit` events per window and counts the rest, so that the next admitted event
/// can say how many were held back. A value fed the time, so its tests need no clock.
///
/// The one rate limit of l4lb's logs: `RateLimitedLog` (one line a second per kind of warning) and
/// `PluginHost` (twenty lines a second per plugin) both use it.
public struct RateLimiter: Sendable, Equatable {
    public let limit: Int
    public let windowNanoseconds: Int64
    private var windowStart: Int64 = .min / 2
    private var admittedInWindow = 0
    private var heldBack = 0

    public init(limit: Int, window: Duration) {
        self.limit = max(1, limit)
        let (seconds, attoseconds) = window.components
        self.windowNanoseconds = max(1, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// Whether an event at `now` (nanoseconds on a monotonic clock) is admitted; when it is, the
    /// number of events held back since the last admitted one.
    public mutating func admit(now: Int64) -> Int? {
        if now - self.windowStart >= self.windowNanoseconds {
            self.windowStart = now
            self.admittedInWindow = 0
        }
        guard self.admittedInWindow < self.limit else {
            self.heldBack += 1
            return nil
        }
        self.admittedInWindow += 1
        defer { self.heldBack = 0 }
        return self.heldBack
    }
}
