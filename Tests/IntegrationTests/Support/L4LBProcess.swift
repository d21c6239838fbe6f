import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// The real `l4lb` executable, run as a child process: for what only a process shows (signals, exit
/// status, what it prints). Stopped by PID when the test ends, whatever happened.
final class L4LBProcess: Sendable {
    private let process: ChildProcess
    private let output = NIOLockedValueBox<String>("")
    /// Set when the reader has seen the end of the output (the process and any daemon it made are gone).
    private let outputEnded = NIOLockedValueBox(false)
    private let pidFile: String

    /// The built `l4lb` next to the test bundle (both are products of the same `swift build`).
    static var executableURL: URL {
        if let override = ProcessInfo.processInfo.environment["L4LB_BINARY"] {
            return URL(fileURLWithPath: override)
        }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // Swift Testing on Linux runs from inside `<name>.xctest`'s directory; walk up to the products.
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("l4lb")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("l4lb")
    }

    /// - Parameter executable: another l4lb binary (an installed copy); by default the one built.
    init(arguments: [String], environment: [String: String] = [:], executable: URL? = nil) throws {
        let (read, write) = try ChildProcess.pipe()
        defer { close(write) }
        let process: ChildProcess
        do {
            process = try ChildProcess(
                (executable ?? Self.executableURL).path,
                arguments,
                environment: environment.isEmpty
                    ? nil : ProcessInfo.processInfo.environment.merging(environment) { _, new in new },
                standardOutput: .descriptor(write),
                standardError: .descriptor(write)
            )
        } catch {
            close(read)
            throw error
        }
        self.process = process
        // For scripts/test, which stops by this PID a process whose test process crashed.
        self.pidFile =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("l4lb-test-process-\(process.pid).pid").path
        try? "\(process.pid)\n".write(toFile: self.pidFile, atomically: true, encoding: .utf8)
        // Once this process has closed its write end (on leaving), only the child (and any daemon it
        // starts) writes, so the reader sees EOF when they are gone.
        // A plain thread with blocking reads, not `readabilityHandler`: that one is a dispatch read
        // source that stays registered in libdispatch's epoll set after the pipe's descriptor is
        // closed, and crashed the whole test process (in _dispatch_event_loop_drain, about one run
        // in twenty) once the number was reused.
        let output = self.output
        let outputEnded = self.outputEnded
        let reader = FileHandle(fileDescriptor: read, closeOnDealloc: false)
        let thread = Thread {
            while true {
                let data = reader.availableData
                if data.isEmpty { break }
                output.withLockedValue { $0 += String(decoding: data, as: UTF8.self) }
            }
            try? reader.close()
            outputEnded.withLockedValue { $0 = true }
        }
        thread.name = "l4lb-test-output"
        thread.start()
    }

    deinit {
        self.kill()
        try? FileManager.default.removeItem(atPath: self.pidFile)
    }

    var pid: Int32 { self.process.pid }
    var isRunning: Bool { self.process.isRunning }
    var text: String { self.output.withLockedValue { $0 } }

    /// How the process ended, for a failing expectation's message: "running", "exit status N" or
    /// "killed by signal N".
    var ending: String { self.process.ending }

    /// Sends `signal` to the process by PID.
    func send(_ signal: Int32) {
        self.process.send(signal)
    }

    func kill() {
        if self.process.isRunning {
            self.process.send(SIGKILL)
            self.process.waitUntilExit()
        }
    }

    /// The exit status, or nil if it is still running after `timeoutSeconds`.
    func waitForExit(timeoutSeconds: Double) async -> Int32? {
        guard await eventually(timeoutSeconds: timeoutSeconds, { !self.process.isRunning }) else { return nil }
        // What it printed last may still be in the pipe: read to its end (bounded: a daemon child
        // keeps the pipe open, and the caller then reads what has come so far).
        _ = await eventually(timeoutSeconds: 2) { self.outputEnded.withLockedValue { $0 } }
        return self.process.exitStatus
    }

    /// The port of the first "listening" line l4lb logs, once l4lb has also logged "l4lb started"
    /// (so a test may signal it at once).
    func listeningPort(timeoutSeconds: Double = 10) async -> Int? {
        var port: Int?
        _ = await eventually(timeoutSeconds: timeoutSeconds) {
            // Once l4lb says it started, not only that it listens: from then on it takes signals.
            let text = self.text
            port = Self.firstListeningPort(in: text)
            return (port != nil && text.contains("l4lb started")) || !self.process.isRunning
        }
        return port
    }

    /// The port of the admin endpoint, once l4lb logs it.
    func adminPort(timeoutSeconds: Double = 10) async -> Int? {
        var port: Int?
        _ = await eventually(timeoutSeconds: timeoutSeconds) {
            port = Self.firstListeningPort(in: self.text, marker: ": admin endpoint listening address=")
            return port != nil || !self.process.isRunning
        }
        return port
    }

    /// The port in the first line of `text` that has `marker` and an `address=host:port` field.
    static func firstListeningPort(in text: String, marker: String = ": listening address=") -> Int? {
        for line in text.split(separator: "\n") where line.contains(marker) {
            guard let range = line.range(of: "address=") else { continue }
            let address = line[range.upperBound...].prefix { $0 != " " }
            if let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) {
                return port
            }
        }
        return nil
    }
}
