import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Emits a repeated warning at most once per interval, with the number of repeats it held back, so
/// that a dead backend or a full server does not write one line per client.
public final class RateLimitedLog: Sendable {
    private let limiter: NIOLockedValueBox<RateLimiter>

    public init(interval: Duration = .seconds(1)) {
        self.limiter = NIOLockedValueBox(RateLimiter(limit: 1, window: interval))
    }

    public func warning(
        _ logger: Logger,
        _ message: @autoclosure () -> Logger.Message,
        metadata: Logger.Metadata = [:]
    ) {
        let now = Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds)
        guard let heldBack = self.limiter.withLockedValue({ $0.admit(now: now) }) else { return }
        var metadata = metadata
        if heldBack > 0 { metadata["suppressed"] = "\(heldBack)" }
        logger.warning(message(), metadata: metadata)
    }
}
