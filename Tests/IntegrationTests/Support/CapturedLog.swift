import Logging
import NIOConcurrencyHelpers

/// A log that keeps its lines in memory, for tests that check what was logged.
final class CapturedLog: Sendable {
    struct Line: Sendable, Equatable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let captured = NIOLockedValueBox<[Line]>([])

    var lines: [Line] { self.captured.withLockedValue { $0 } }

    /// A logger that writes here, at every level.
    func logger() -> Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    fileprivate func append(_ line: Line) {
        self.captured.withLockedValue { $0.append(line) }
    }

    private struct Handler: LogHandler {
        let log: CapturedLog
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.metadata[key] }
            set { self.metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            self.log.append(
                Line(
                    level: event.level,
                    message: "\(event.message)",
                    metadata: (event.metadata ?? [:]).mapValues { "\($0)" }
                )
            )
        }
    }
}
