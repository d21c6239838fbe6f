import Foundation
import LBKit
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Where l4lb's event log goes: standard error or a file that SIGHUP reopens (for logrotate).
public final class LogOutput: Sendable {
    private let path: String?
    private let fd: NIOLockedValueBox<Int32>

    /// - Parameter path: a file to append to, or nil for standard error.
    public init(path: String?) throws(L4LBError) {
        self.path = path
        guard let path else {
            self.fd = NIOLockedValueBox(STDERR_FILENO)
            return
        }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw L4LBError(.invalidValue, "--log-file \(path): \(String(cString: strerror(errno)))")
        }
        self.fd = NIOLockedValueBox(fd)
    }

    /// Opens the file again under its name (after logrotate moved the old one away).
    public func reopen() {
        guard let path = self.path else { return }
        let fresh = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fresh >= 0 else { return }
        self.fd.withLockedValue { fd in
            close(fd)
            fd = fresh
        }
    }

    /// Writes one line; the lock keeps lines from different threads whole.
    func write(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        self.fd.withLockedValue { fd in
            _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        }
    }
}

/// One line per event, as text (`2026-11-25T13:00:00Z info l4lb: message key=value`) or JSON
/// (`{"time":..., "level":..., "message":..., "key":...}`).
public struct LineLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable {
        case text
        case json
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let output: LogOutput
    private let format: Format

    public init(label: String, output: LogOutput, format: Format, level: Logger.Level) {
        self.label = label
        self.output = output
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let time = Timestamp.iso8601(Date())
        switch self.format {
        case .text:
            // Every value may carry outside bytes (a Redis payload, a plugin's text): escaped, so that
            // a newline cannot forge a second log line.
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.escaped("\($0.value)"))" }
                .joined(separator: " ")
            self.output.write(
                "\(time) \(event.level) \(self.label): \(Self.escaped("\(event.message)"))"
                    + (fields.isEmpty ? "" : " " + fields)
            )
        case .json:
            var fields: [String: String] = ["time": time, "level": "\(event.level)", "message": "\(event.message)"]
            for (key, value) in merged where fields[key] == nil { fields[key] = "\(value)" }
            self.output.write(JSONText.encode(fields))
        }
    }

    /// `text` with control characters written as escapes (\n, \r, \t, \u{1b}...), backslashes doubled.
    static func escaped(_ text: String) -> String {
        ControlCharacters.escaped(text, doublingBackslashes: true)
    }
}
