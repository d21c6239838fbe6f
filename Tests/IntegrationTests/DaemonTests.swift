import Foundation
import Testing

@testable import l4lb

#if canImport(Glibc)
import Glibc
#endif

/// l4lb as a long-running service: daemon mode, pid file, systemd notification, config file and
/// SIGHUP. Each test runs the real executable and stops it by PID.
@Suite("Running as a service")
struct DaemonTests {
    @Test(
        "--daemon detaches, writes the pid file, serves; a second instance on the same pid file refuses; SIGTERM removes the file"
    )
    func daemonMode() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            let directory = try PluginFixtures.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let pidFile = "\(directory)/l4lb.pid"
            let logFile = "\(directory)/l4lb.log"
            let launcher = try L4LBProcess(arguments: [
                "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:\(backend.port)",
                "--daemon", "--pid-file", pidFile, "--log-file", logFile,
            ])
            #expect(await launcher.waitForExit(timeoutSeconds: 30) == 0)
            let pidText = try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines
            )
            let pid = try #require(Int32(pidText))
            r.onStop { if kill(pid, 0) == 0 { kill(pid, SIGKILL) } }
            #expect(launcher.text.contains("pid \(pid)"))
            #expect(kill(pid, 0) == 0)
            let port = try #require(await listeningPort(inLogFile: logFile))
            #expect(try BlockingClient.greeting(port: port) == "a")

            let second = try L4LBProcess(arguments: ["--listen", "127.0.0.1:0", "--pid-file", pidFile])
            #expect(await second.waitForExit(timeoutSeconds: 10) == 2)
            #expect(second.text == "l4lb: error: --pid-file \(pidFile) is held by another l4lb (pid \(pid))\n")

            kill(pid, SIGTERM)
            #expect(await eventually(timeoutSeconds: 10) { kill(pid, 0) != 0 })
            #expect(!FileManager.default.fileExists(atPath: pidFile))
            let log = try String(contentsOfFile: logFile, encoding: .utf8)
            #expect(log.contains("l4lb started"))
            #expect(log.contains("stopped"))
        }
    }

    @Test("--daemon without --log-file is refused in the foreground")
    func daemonNeedsLogFile() async throws {
        let process = try L4LBProcess(arguments: ["--listen", "127.0.0.1:0", "--daemon"])
        #expect(await process.waitForExit(timeoutSeconds: 10) == 2)
        #expect(process.text.contains("--daemon needs --log-file"))
    }

    @Test("systemd notification: READY=1 once listening, WATCHDOG=1 while alive, STOPPING=1 on SIGTERM")
    func systemdNotify() async throws {
        // In withTestResources for its executor: the receiver's reads block.
        try await withTestResources { r in
            let directory = try PluginFixtures.makeDirectory()
            r.onStop { try? FileManager.default.removeItem(atPath: directory) }
            let socketPath = "\(directory)/notify.sock"
            let receiver = try DatagramReceiver(path: socketPath)
            let process = try L4LBProcess(
                arguments: ["--listen", "127.0.0.1:0"],
                environment: ["NOTIFY_SOCKET": socketPath, "WATCHDOG_USEC": "200000"]
            )
            r.onStop { process.kill() }
            let ready = try #require(receiver.receive(timeoutSeconds: 10))
            #expect(ready.contains("READY=1"))
            #expect(ready.contains("MAINPID=\(process.pid)"))
            #expect(await process.listeningPort() != nil)
            var watchdogs = 0
            for _ in 0..<4 where receiver.receive(timeoutSeconds: 2)?.contains("WATCHDOG=1") == true {
                watchdogs += 1
            }
            #expect(watchdogs >= 2)
            process.send(SIGTERM)
            var stopping = false
            for _ in 0..<10 {
                guard let message = receiver.receive(timeoutSeconds: 2) else { break }
                if message.contains("STOPPING=1") {
                    stopping = true
                    break
                }
            }
            #expect(stopping)
            #expect(await process.waitForExit(timeoutSeconds: 10) == 0)
        }
    }

    @Test(
        "--config: the file holds the flags, the command line overrides it; SIGHUP re-reads it without dropping a connection and reopens the log file"
    )
    func configAndReload() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b", "c"])
            let directory = try PluginFixtures.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let config = "\(directory)/l4lb.conf"
            let logFile = "\(directory)/l4lb.log"
            func write(backends names: [Int]) throws {
                let lines =
                    [
                        "# test configuration", "listen 127.0.0.1:0", "log-file \(logFile)",
                        "policy least-connections",
                    ]
                    + names.map { "backend 127.0.0.1:\(backends[$0].port)" }
                try (lines.joined(separator: "\n") + "\n").write(toFile: config, atomically: true, encoding: .utf8)
            }
            try write(backends: [0])
            // The command line's --policy overrides the file's.
            let process = try L4LBProcess(arguments: ["--config", config, "--policy", "round-robin"])
            r.onStop { process.kill() }
            let port = try #require(await listeningPort(inLogFile: logFile))
            let held = try BlockingClient(port: port)
            #expect(try held.readLine() == "a")
            let startLog = try String(contentsOfFile: logFile, encoding: .utf8)
            #expect(startLog.contains("policy=round-robin"))

            try write(backends: [1, 2])
            try FileManager.default.moveItem(atPath: logFile, toPath: logFile + ".1")
            process.send(SIGHUP)
            #expect(
                await eventually {
                    (try? String(contentsOfFile: logFile, encoding: .utf8))?.contains("reloaded") == true
                }
            )
            var served = Set<String>()
            for _ in 0..<4 { served.insert(try BlockingClient.greeting(port: port)) }
            #expect(served == ["b", "c"])
            try held.send("still here\n")
            #expect(try held.readLine() == "still here")

            // A broken file is refused and changes nothing.
            try "backend nonsense\n".write(toFile: config, atomically: true, encoding: .utf8)
            process.send(SIGHUP)
            #expect(
                await eventually {
                    (try? String(contentsOfFile: logFile, encoding: .utf8))?.contains("reload refused") == true
                }
            )
            #expect(Set(try (0..<4).map { _ in try BlockingClient.greeting(port: port) }) == ["b", "c"])
            #expect(process.isRunning)
        }
    }

    @Test(
        "a bad config file is one line and a non-zero exit",
        arguments: ["listen", "backend 127.0.0.1:1\nbogus-option 3", "config /etc/other"]
    )
    func badConfigFile(contents: String) async throws {
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = "\(directory)/bad.conf"
        try contents.write(toFile: config, atomically: true, encoding: .utf8)
        let process = try L4LBProcess(arguments: ["--config", config])
        #expect(await process.waitForExit(timeoutSeconds: 10) == 2)
        #expect(process.text.hasPrefix("l4lb: error: "))
        #expect(process.text.split(separator: "\n").count == 1, "got: \(process.text)")
    }
}

/// The port l4lb logged it listens on (it was started with port 0), once the log file says so.
func listeningPort(inLogFile path: String) async -> Int? {
    var port: Int?
    _ = await eventually(timeoutSeconds: 15) {
        port = L4LBProcess.firstListeningPort(in: (try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
        return port != nil
    }
    return port
}

/// A unix datagram socket that plays systemd's notify socket.
final class DatagramReceiver {
    private let fd: Int32
    private let path: String

    init(path: String) throws {
        self.path = path
        self.fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(self.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard status == 0 else {
            throw TestFailure("bind \(path): \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        close(self.fd)
        unlink(self.path)
    }

    func receive(timeoutSeconds: Double) -> String? {
        var descriptor = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(timeoutSeconds * 1000)) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(self.fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self) : nil
    }
}
