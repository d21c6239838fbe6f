import Foundation
import LBKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The shipped systemd unit kills l4lb at the first system call its `SystemCallFilter=` does not
/// allow. Here a real l4lb runs under that filter, applied with seccomp as systemd applies it, and
/// does what a unit-started l4lb does: starts its relay threads (pinned, with their slice and nice
/// value), relays a client, takes a backend from Redis, serves the admin endpoint, and stops on
/// SIGTERM.
@Suite("The systemd unit's system-call filter")
struct SystemdUnitFilterTests {
    @Test("l4lb starts, relays, follows Redis, answers the admin endpoint and stops under the unit's SystemCallFilter")
    func runsUnderTheUnitsFilter() async throws {
        let root = PluginFixtures.repositoryRoot
        let unit = try String(
            contentsOf: root.appendingPathComponent("scripts/systemd/l4lb.service"),
            encoding: .utf8
        )
        let filter = try UnitSystemCallFilter(unit: unit)
        // The expansion worked if it holds calls every service makes, and not what the unit refuses.
        #expect(filter.allowed.isSuperset(of: ["read", "epoll_wait", "accept4", "execve"]))
        #expect(filter.allowed.isDisjoint(with: ["reboot", "setrlimit"]))
        let names = FileManager.default.temporaryDirectory
            .appendingPathComponent("l4lb-unit-syscalls-\(UUID().uuidString)")
        try filter.allowed.sorted().joined(separator: "\n").write(to: names, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: names) }

        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b"])
            let redis = try await r.redis()
            let process = try L4LBProcess(
                arguments: [
                    root.appendingPathComponent("Tests/Fixtures/seccomp/run-filtered.py").path, names.path,
                    L4LBProcess.executableURL.path,
                    "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:\(backends[0].port)", "--admin", "127.0.0.1:0",
                    "--redis", redis.url,
                    "--threads", "2", "--relay-cpus", "auto",
                ],
                executable: URL(fileURLWithPath: "/usr/bin/python3")
            )
            r.onStop { process.kill() }
            let port = try #require(
                await process.listeningPort(),
                "\(process.ending); it printed: \(process.text)"
            )
            #expect(try BlockingClient(port: port).readLine() == "a", "\(process.ending); it printed: \(process.text)")
            let admin = try #require(await process.adminPort())
            #expect(try httpGet(port: admin, path: "/status").status == 200)
            // The control plane's thread and its Redis connection live under the filter too.
            #expect(
                await eventually { (try? redis.client().publish("addServer", "127.0.0.1:\(backends[1].port)")) == 1 }
            )
            #expect(
                await eventually {
                    (try? httpGet(port: admin, path: "/status").body.contains("127.0.0.1:\(backends[1].port)")) == true
                },
                "\(process.ending); it printed: \(process.text)"
            )
            process.send(SIGTERM)
            #expect(
                await process.waitForExit(timeoutSeconds: 15) == 0,
                "\(process.ending) (SIGSYS is 31: a call the unit does not allow); it printed: \(process.text)"
            )
            #expect(!process.text.contains("warning"), "it printed: \(process.text)")
        }
    }
}
