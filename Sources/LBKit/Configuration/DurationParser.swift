import NIOCore

/// Parses operator durations: `300us`, `250ms`, `3s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
public enum DurationParser {
    public static func parse(_ text: String, flag: String) throws(L4LBError) -> TimeAmount {
        let trimmed = text.trimmingASCIIWhitespace()
        let units: [(suffix: String, nanoseconds: Double)] = [
            ("us", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
        ]
        var number = Substring(trimmed)
        var scale = 1e9
        for unit in units where trimmed.hasSuffix(unit.suffix) {
            number = trimmed.dropLast(unit.suffix.count)
            scale = unit.nanoseconds
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0, value * scale < 1e18 else {
            throw L4LBError(
                .invalidDuration,
                "\(flag): '\(text)' is not a duration (a non-negative number with us, ms, s, m or h, e.g. 3s)"
            )
        }
        return .nanoseconds(Int64(value * scale))
    }
}
