import Foundation
import LBKit
import NIOConcurrencyHelpers

/// One line per closed client connection: client, backend, bytes each way, duration, close reason,
/// and how many other backends were tried first (like HAProxy's retries field).
///
/// Lines are formatted on the relay thread and handed to a writer thread, which appends them to the
/// file in batches, so that no relay thread ever waits on the disk. Handing a line over takes one
/// lock; the writer sleeps until there is something to write. SIGHUP reopens the file (for
/// logrotate).
public final class AccessLog: ConnectionObserver {
    public enum Format: String, Sendable, CaseIterable {
        case json
        case logfmt
    }

    private struct Pending {
        var lines: [String] = []
        var reopen = true
        var stopped = false
    }

    private let path: String?
    private let format: Format
    /// Value 1 while there is work for the writer: lines, a reopen or the stop.
    private let work = ConditionLock(value: 0)
    /// Guarded by `work`.
    private nonisolated(unsafe) var pending = Pending()
    private let finished = ConditionLock(value: 0)

    /// - Parameter path: a file to append to, or nil (or "-") for standard output.
    public init(path: String?, format: Format) {
        self.path = path == "-" ? nil : path
        self.format = format
        let thread = Thread { [self] in self.writeLoop() }
        thread.name = "l4lb-access-log"
        thread.start()
    }

    /// Checks that the file can be opened for appending; throws a one-line error if not.
    public static func checkWritable(_ path: String) throws(L4LBError) {
        guard path != "-" else { return }
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw L4LBError(.invalidValue, "--access-log: cannot create \(path)")
            }
        }
        guard FileHandle(forWritingAtPath: path) != nil else {
            throw L4LBError(.invalidValue, "--access-log: cannot write to \(path)")
        }
    }

    public func connectionClosed(_ record: ConnectionRecord) {
        let line = Self.line(record, closedAt: Date(), format: self.format)
        self.submit { $0.lines.append(line) }
    }

    /// Reopens the file on the next write (after logrotate moved it).
    public func reopen() {
        self.submit { $0.reopen = true }
    }

    /// Writes what is pending and stops the writer thread.
    public func close() {
        self.submit { $0.stopped = true }
        self.finished.lock(whenValue: 1)
        self.finished.unlock()
    }

    private func submit(_ change: (inout Pending) -> Void) {
        self.work.lock()
        change(&self.pending)
        self.work.unlock(withValue: 1)
    }

    private func writeLoop() {
        var file: FileHandle?
        while true {
            self.work.lock(whenValue: 1)
            let taken = self.pending
            self.pending.lines = []
            self.pending.reopen = false
            self.work.unlock(withValue: 0)

            if taken.reopen, let path = self.path {
                try? file?.close()
                file = Self.openForAppending(path)
            }
            if !taken.lines.isEmpty {
                (file ?? (self.path == nil ? FileHandle.standardOutput : nil))?.write(Data(taken.lines.joined().utf8))
            }
            if taken.stopped { break }
        }
        try? file?.close()
        self.finished.lock()
        self.finished.unlock(withValue: 1)
    }

    private static func openForAppending(_ path: String) -> FileHandle? {
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
        }
        let file = FileHandle(forWritingAtPath: path)
        _ = try? file?.seekToEnd()
        return file
    }

    /// The line for `record`, closed at `time`, newline included.
    public static func line(_ record: ConnectionRecord, closedAt time: Date, format: Format) -> String {
        let fields = AccessLogFields(record, closedAt: time)
        switch format {
        case .json:
            return JSONText.encode(fields) + "\n"
        case .logfmt:
            return "time=\(fields.time) client=\(fields.client) backend=\(fields.backend) "
                + "bytes_from_client=\(fields.bytesFromClient) bytes_from_backend=\(fields.bytesFromBackend) "
                + "duration_ms=\(String(format: "%.3f", fields.durationMilliseconds)) reason=\(fields.reason) "
                + "retries=\(fields.retries)\n"
        }
    }
}

/// An access-log line's fields, named as they appear in it.
struct AccessLogFields: Encodable {
    var time: String
    var client: String
    var backend: String
    var bytesFromClient: UInt64
    var bytesFromBackend: UInt64
    var durationMilliseconds: Double
    var reason: String
    var retries: Int

    enum CodingKeys: String, CodingKey {
        case time
        case client
        case backend
        case bytesFromClient = "bytes_from_client"
        case bytesFromBackend = "bytes_from_backend"
        case durationMilliseconds = "duration_ms"
        case reason
        case retries
    }

    init(_ record: ConnectionRecord, closedAt time: Date) {
        self.time = Timestamp.iso8601(time)
        self.client = record.client.description
        self.backend = record.backend?.description ?? "-"
        self.bytesFromClient = record.bytesFromClient
        self.bytesFromBackend = record.bytesFromBackend
        let (seconds, attoseconds) = record.duration.components
        // Microsecond resolution, as before: milliseconds with three decimals.
        self.durationMilliseconds = Double(seconds * 1_000_000 + attoseconds / 1_000_000_000_000) / 1000
        self.reason = record.reason.rawValue
        self.retries = record.retries
    }
}
