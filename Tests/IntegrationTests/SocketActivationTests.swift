import CLinux
import Foundation
import LBKit
import NIOConcurrencyHelpers
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Socket activation as `systemctl restart` does it: the test plays systemd and holds the listening
/// socket; each l4lb is started through Debian's systemd-socket-activate, which passes the socket
/// on (LISTEN_FDS, LISTEN_PID). While one l4lb stops and the next starts, clients wait in the
/// socket's queue: none is refused.
@Suite("Socket activation", .serialized)
struct SocketActivationTests {
    /// Starts `systemd-socket-activate l4lb ARGS` with `socket` as its descriptor 3; returns the pid.
    static func start(socket: Int32, arguments: [String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, socket, 3)
        // Nothing else of this test process (other tests' client sockets, listeners) goes along:
        // an inherited socket would stay open after its test closed it.
        l4lb_spawn_close_from(&actions, 4)
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0)
        // LISTEN_PID must be the process that reads it: the shell's own, which exec keeps.
        let argv =
            [
                "/bin/sh", "-c", #"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#, "/usr/bin/systemd-socket-activate",
                L4LBProcess.executableURL.path,
            ] + arguments
        let arguments = argv.map { strdup($0) } + [nil]
        defer { for pointer in arguments { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, "/bin/sh", &actions, nil, arguments, environ)
        guard status == 0 else { throw TestFailure("posix_spawn: \(String(cString: strerror(status)))") }
        return pid
    }

    static func stop(_ pid: pid_t) -> Int32 {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return status
    }

    @Test("five restarts under load through systemd-socket-activate: no client refused")
    func restarts() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate"))
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b"])
            let (socket, port) = listenOnLoopback(backlog: 1024)
            defer { close(socket) }
            // The test backends keep a half-closed connection open, so each stop waits out its drain.
            let arguments = backends.flatMap { ["--backend", $0.spec.description] } + ["--drain-timeout", "1s"]
            let running = NIOLockedValueBox(try Self.start(socket: socket, arguments: arguments))
            r.onStop {
                if kill(running.withLockedValue { $0 }, 0) == 0 { _ = Self.stop(running.withLockedValue { $0 }) }
            }
            // systemd-socket-activate starts l4lb at the first client, which then waits in the queue.
            #expect(["a", "b"].contains(try BlockingClient.greeting(port: port)))

            let clients = UpgradeTests.ClientLoop(port: port)
            for round in 0..<5 {
                let before = clients.served.withLockedValue { $0 }
                #expect(
                    await eventually(timeoutSeconds: 20) { clients.served.withLockedValue { $0 } > before + 10 },
                    "round \(round)"
                )
                // systemctl restart: stop, then start again on the same socket.
                #expect(Self.stop(running.withLockedValue { $0 }) == 0)
                let next = try Self.start(socket: socket, arguments: arguments)
                running.withLockedValue { $0 = next }
            }
            let before = clients.served.withLockedValue { $0 }
            #expect(await eventually(timeoutSeconds: 20) { clients.served.withLockedValue { $0 } > before + 10 })
            #expect(await clients.finish())
            let served = clients.served.withLockedValue { $0 }
            let gap = clients.longestGap.withLockedValue { $0 }
            print("socket activation: 5 restarts, \(served) connections served, longest gap \(Int(gap * 1000)) ms")
            #expect(
                clients.failures.withLockedValue { $0 }.isEmpty,
                "\(clients.failures.withLockedValue { $0.prefix(3) })"
            )
            #expect(Self.stop(running.withLockedValue { $0 }) == 0)
        }
    }
}
