import Foundation
import LBControlPlane
import LBKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real redis-server on 127.0.0.1, started for one test and stopped by PID. Its data directory is
/// private, so a restart after SAVE finds what was saved. With `sentinelConfiguration` it is a
/// sentinel (`redis-server FILE --sentinel`) instead.
final class RedisServer: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        var exitedEarly = false
    }

    private(set) var port: Int
    let directory: URL
    /// More redis-server arguments (`--replicaof ...`, `--requirepass ...`).
    private let arguments: [String]
    /// Lines of a sentinel's configuration file; nil for a plain server.
    private let sentinelConfiguration: [String]?
    /// The password clients give (`requirepass`), if any.
    let password: String?
    private var process: ChildProcess?
    /// Holds the port while the server is down, so that a parallel test's server cannot take it and
    /// be mistaken for this one by an l4lb that reconnects.
    private var reservation: PortReservation?

    /// Starts redis-server; fails the test (never skips it) if it cannot start.
    init(arguments: [String] = [], sentinelConfiguration: [String]? = nil, password: String? = nil) async throws {
        self.arguments = arguments
        self.sentinelConfiguration = sentinelConfiguration
        self.password = password
        let reservation = PortReservation()
        self.port = reservation.port
        self.reservation = reservation
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "l4lb-redis-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        // The port is free between releasing the reservation and redis binding it; if a server of a
        // parallel test took it in that moment, redis exits at once: try another port.
        for attempt in 1...3 {
            do {
                try await self.launch()
                return
            } catch let failure as Failure where failure.exitedEarly && attempt < 3 {
                let next = PortReservation()
                self.port = next.port
                self.reservation = next
            }
        }
    }

    deinit {
        self.kill()
        try? FileManager.default.removeItem(at: self.directory)
    }

    var url: String { "redis://127.0.0.1:\(self.port)" }
    var endpoint: RedisEndpoint {
        RedisEndpoint(transport: .tcp(host: "127.0.0.1", port: self.port), password: self.password)
    }

    /// Restarts the server on the same port and directory. redis-server cannot share the port with
    /// the reservation, so the port is free for a moment before redis binds it; an outgoing connection
    /// (an l4lb reconnecting to this very port) may take it as its ephemeral port then. That socket
    /// goes away within moments, so a start that failed on it is tried again on the same port.
    func start() async throws {
        for attempt in 1...5 {
            do {
                try await self.launch()
                return
            } catch let failure as Failure where failure.exitedEarly && attempt < 5 {
                try await Task.sleep(nanoseconds: 200_000_000)
            }
        }
    }

    private func launch() async throws {
        let candidates = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        guard let binary = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw Failure(description: "redis-server is not installed: run scripts/test, which installs it")
        }
        let common = [
            "--port", "\(self.port)", "--bind", "127.0.0.1", "--dir", self.directory.path, "--daemonize", "no",
            // For scripts/test, which stops by this PID a server whose test process crashed.
            "--pidfile", self.directory.appendingPathComponent("redis.pid").path,
        ]
        let arguments: [String]
        if let lines = self.sentinelConfiguration {
            // A sentinel rewrites its file (what it learns about replicas and peers): a private copy.
            let file = self.directory.appendingPathComponent("sentinel.conf")
            try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
            arguments = [file.path, "--sentinel"] + common + self.arguments
        } else {
            arguments = common + ["--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb"] + self.arguments
        }
        self.reservation?.release()
        self.reservation = nil
        let process = try ChildProcess(binary, arguments, standardOutput: .null, standardError: .null)
        self.process = process
        let up = await eventually(timeoutSeconds: 10) {
            !process.isRunning
                || (try? RedisConnection(self.endpoint, timeout: .milliseconds(200)).command(["PING"]))
                    == .status("PONG")
        }
        guard up, process.isRunning else {
            let exitedEarly = !process.isRunning
            self.kill()
            throw Failure(
                description: exitedEarly
                    ? "redis-server exited at start on port \(self.port)"
                    : "redis-server did not answer PING on port \(self.port) within 10 s",
                exitedEarly: exitedEarly
            )
        }
    }

    /// A fresh client connection to this server.
    func client() throws -> RedisConnection {
        try RedisConnection(self.endpoint)
    }

    /// Sends `signal` to the server's process (SIGSTOP freezes it with its sockets open; SIGCONT
    /// resumes it).
    func send(_ signal: Int32) {
        self.process?.send(signal)
    }

    /// Stops the server by PID and waits for it; the port stays reserved until `start()`.
    func kill() {
        guard let process, process.isRunning else { return }
        process.send(SIGKILL)
        process.waitUntilExit()
        // Cannot fail unless another socket took the port the moment redis died; the test that
        // restarts this server then finds out from `start()`.
        self.reservation = try? PortReservation(port: self.port)
    }
}
