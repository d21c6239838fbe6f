import Atomics
import Logging
import NIOCore

/// Emits a repeated warning at most once per interval, with the number of repeats it held back, so
/// that a dead backend or a full server does not write one line per client.
final class RateLimitedLog: Sendable {
    private let interval: Int64
    private let lastEmitted = ManagedAtomic<Int64>(Int64.min / 2)
    private let suppressed = ManagedAtomic<Int>(0)

    init(interval: TimeAmount = .seconds(1)) {
        self.interval = interval.nanoseconds
    }

    func warning(_ logger: Logger, _ message: @autoclosure () -> Logger.Message, metadata: Logger.Metadata = [:]) {
        let now = NIODeadline.now().uptimeNanoseconds
        let last = self.lastEmitted.load(ordering: .relaxed)
        let nowSigned = Int64(truncatingIfNeeded: now)
        guard nowSigned - last >= self.interval,
            self.lastEmitted.compareExchange(expected: last, desired: nowSigned, ordering: .relaxed).exchanged
        else {
            self.suppressed.wrappingIncrement(ordering: .relaxed)
            return
        }
        var metadata = metadata
        let held = self.suppressed.exchange(0, ordering: .relaxed)
        if held > 0 { metadata["suppressed"] = "\(held)" }
        logger.warning(message(), metadata: metadata)
    }
}
