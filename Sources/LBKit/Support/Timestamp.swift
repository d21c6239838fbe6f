import Foundation

/// The one spelling of a time in l4lb's logs: ISO 8601 in UTC with milliseconds and the zone
/// (`2026-11-25T14:00:00.000Z`), so that lines from hosts in different zones sort together.
public enum Timestamp {
    public static func iso8601(_ date: Date) -> String {
        date.formatted(
            .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted)
        )
    }
}

extension Timestamp {
    /// A time written by `iso8601(_:)`, read back; nil if it is not one.
    public static func parse(_ text: String) -> Date? {
        try? Date(
            text,
            strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted)
        )
    }
}
