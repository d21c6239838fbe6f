import LBControlPlane
import LBKit
import NIOConcurrencyHelpers
import Testing

@testable import l4lb

#if canImport(Glibc)
import Glibc
#endif

/// The wiring itself (`buildApplication`, `Application`, `Reloader`): what the binary runs.
@Suite("Application wiring")
struct ApplicationTests {
    @Test("by default a connection quiet for 10 minutes is closed; --idle-timeout 0 keeps it for ever")
    func defaultIdleTimeout() throws {
        let defaults = try RunCommand.parse(["--backend", "127.0.0.1:9"]).makeAllSettings()
        #expect(defaults.proxy.idleTimeout == .minutes(10))
        let never = try RunCommand.parse(["--backend", "127.0.0.1:9", "--idle-timeout", "0"]).makeAllSettings()
        #expect(never.proxy.idleTimeout == nil)
    }

    @Test("SIGHUP compares with the settings in force: a second reload of a changed policy rebuilds nothing")
    func reloadComparesWithSettingsInForce() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: backends.map(\.spec), ["--policy", "round-robin"])
            let flags =
                ["--listen", "127.0.0.1:0", "--threads", "2", "--policy", "least-connections"]
                + backends.flatMap { ["--backend", $0.spec.description] }
            let fresh = try RunCommand.parse(flags).makeAllSettings()
            let reloader = Reloader(application: proxy, reloadedSettings: { fresh }, logOutput: nil)
            #expect(await reloader.reload() == ["policy"])
            let policy = proxy.router.policy
            #expect(policy.name == "least-connections")
            // The same file again: nothing to apply, and the policy in use is the same instance.
            #expect(await reloader.reload() == [])
            #expect(proxy.router.policy === policy)
        }
    }

    @Test("SIGHUP with another --listen opens the new address and closes the old one; open connections go on")
    func reloadChangesListeners() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.echo)
            let proxy = try await r.l4lb(backends: [backend.spec])
            let oldPort = proxy.port
            let reservation = PortReservation()
            let newPort = reservation.port
            let held = try BlockingClient(port: oldPort)
            let next = NIOLockedValueBox(proxy.settings)
            let reloader = Reloader(
                application: proxy,
                reloadedSettings: { next.withLockedValue { $0 } },
                logOutput: nil
            )
            func reload(_ listen: [String]) async throws -> [String] {
                let flags =
                    listen.flatMap { ["--listen", $0] } + ["--threads", "2", "--backend", backend.spec.description]
                let fresh = try RunCommand.parse(flags).makeAllSettings()
                next.withLockedValue { $0 = fresh }
                return await reloader.reload()
            }
            #expect(try await reload(["127.0.0.1:0", "127.0.0.1:\(newPort)"]) == ["listen"])
            try held.send("before\n")
            #expect(try held.readLine() == "before")
            let viaNew = try BlockingClient(port: newPort)
            try viaNew.send("new\n")
            #expect(try viaNew.readLine() == "new")

            #expect(try await reload(["127.0.0.1:\(newPort)"]) == ["listen"])
            #expect(throws: TestFailure.self) { try BlockingClient(port: oldPort) }
            try held.send("still\n")
            #expect(try held.readLine() == "still")
            // Compared with what is in force now: the same again changes nothing.
            #expect(try await reload(["127.0.0.1:\(newPort)"]) == [])
            withExtendedLifetime(reservation) {}
        }
    }

    @Test("when the listener cannot be opened, start fails with one line and the control plane is stopped again")
    func failedStartStopsTheControlPlane() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            // Held without SO_REUSEPORT, so that l4lb's bind fails.
            let taken = listenOnLoopback(backlog: 1)
            defer { close(taken.fd) }
            var settings = try RunCommand.parse(["--listen", "127.0.0.1:\(taken.port)", "--redis", redis.url])
                .makeAllSettings()
            settings.controlPlane?.initialReconnectDelay = .milliseconds(50)
            let application = try buildApplication(settings, logger: .init(label: "test"))
            let controlPlane = try #require(application.controlPlane)
            await #expect(throws: L4LBError.self) { try await application.start() }
            #expect(!controlPlane.isRunning)
            // Its connections to Redis are closed: only this test's own remains.
            let client = try redis.client()
            #expect(
                await eventually { (try? client.command(["CLIENT", "LIST"]).text)?.split(separator: "\n").count == 1 }
            )
        }
    }
}
