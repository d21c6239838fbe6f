import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// One line per closed client connection: client, backend, bytes each way, duration, close reason,
/// and how many other backends were tried first (like HAProxy's retries field).
///
/// Lines are formatted on the event loop and handed to a writer thread, which appends them to the
/// file in batches, so that no event loop ever waits on the disk. SIGHUP reopens the file (for
/// logrotate).
public final class AccessLog: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        case json
        case logfmt
    }

    public struct Entry: Sendable {
        public var time: Date
        public var client: String
        public var backend: String
        public var bytesFromClient: UInt64
        public var bytesFromBackend: UInt64
        public var duration: TimeAmount
        public var reason: String
        /// Backends tried for this client before the one it ended with (failed connects, resets
        /// before the first byte); for a client refused, the tries after the first.
        public var retries: Int
    }

    private let path: String?
    private let format: Format
    private let pending = NIOLockedValueBox<(lines: [String], file: FileHandle?, reopen: Bool, stopped: Bool)>(
        ([], nil, true, false)
    )
    private let wake = ConditionLock(value: 0)
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

    func record(_ entry: Entry) {
        let line = self.format == .json ? Self.json(entry) : Self.logfmt(entry)
        self.pending.withLockedValue { $0.lines.append(line) }
        self.wake.lock()
        self.wake.unlock(withValue: 1)
    }

    /// Reopens the file on the next write (after logrotate moved it).
    public func reopen() {
        self.pending.withLockedValue { $0.reopen = true }
    }

    /// Writes what is pending and stops the writer thread.
    public func close() {
        self.pending.withLockedValue { $0.stopped = true }
        self.wake.lock()
        self.wake.unlock(withValue: 1)
        self.finished.lock(whenValue: 1)
        self.finished.unlock()
    }

    private func writeLoop() {
        while true {
            // Wakes on a new line or every 200 ms; the lock is held only if the wait succeeded.
            if self.wake.lock(whenValue: 1, timeoutSeconds: 0.2) {
                self.wake.unlock(withValue: 0)
            }
            let (lines, stopped, reopen) = self.pending.withLockedValue { state in
                defer {
                    state.lines = []
                    state.reopen = false
                }
                return (state.lines, state.stopped, state.reopen)
            }
            if reopen { self.openFile() }
            if !lines.isEmpty {
                let data = Data(lines.joined().utf8)
                if let file = self.pending.withLockedValue({ $0.file }) {
                    file.write(data)
                } else {
                    FileHandle.standardOutput.write(data)
                }
            }
            if stopped { break }
        }
        self.pending.withLockedValue { try? $0.file?.close() }
        self.finished.lock()
        self.finished.unlock(withValue: 1)
    }

    private func openFile() {
        guard let path = self.path else { return }
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
        }
        let file = FileHandle(forWritingAtPath: path)
        _ = try? file?.seekToEnd()
        self.pending.withLockedValue { state in
            try? state.file?.close()
            state.file = file
        }
    }

    private static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
    }

    static func json(_ entry: Entry) -> String {
        let object: [String: Any] = [
            "time": Self.timestamp(entry.time),
            "client": entry.client,
            "backend": entry.backend,
            "bytes_from_client": entry.bytesFromClient,
            "bytes_from_backend": entry.bytesFromBackend,
            "duration_ms": Double(entry.duration.nanoseconds / 1000) / 1000,
            "reason": entry.reason,
            "retries": entry.retries,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    static func logfmt(_ entry: Entry) -> String {
        let duration = String(format: "%.3f", Double(entry.duration.nanoseconds / 1000) / 1000)
        return "time=\(Self.timestamp(entry.time)) client=\(entry.client) backend=\(entry.backend) "
            + "bytes_from_client=\(entry.bytesFromClient) bytes_from_backend=\(entry.bytesFromBackend) "
            + "duration_ms=\(duration) reason=\(entry.reason) retries=\(entry.retries)\n"
    }
}
