import LBControlPlane
import LBKit
import Logging
import NIOCore

@testable import l4lb

/// l4lb as the binary builds it (`buildApplication`), started in this process on 127.0.0.1 port 0.
extension TestResources {
    /// Starts l4lb with `flags` (the binary's own flags) after `--listen 127.0.0.1:0` (unless `flags`
    /// has a `--listen`), `--threads 2`
    /// and one `--backend` per spec; `tune` adjusts the checked settings where no flag exists
    /// (the control plane's reconnect delays). Logs go to `logger` (none by default). Stopped when
    /// the test ends.
    func l4lb(
        backends: [BackendSpec] = [],
        _ flags: [String] = [],
        logger: Logger? = nil,
        tune: (inout RunCommand.Settings) -> Void = { _ in }
    ) async throws -> Application {
        let listen = flags.contains("--listen") ? [] : ["--listen", "127.0.0.1:0"]
        let arguments = listen + ["--threads", "2"] + backends.flatMap { ["--backend", $0.description] } + flags
        var settings = try RunCommand.parse(arguments).makeAllSettings()
        tune(&settings)
        var quiet = Logger(label: "l4lb-test")
        quiet.logLevel = .critical
        let application = try buildApplication(settings, logger: logger ?? quiet)
        self.onStop { await application.stop() }
        try await application.start()
        return application
    }

    /// l4lb with a Redis control plane on `redis`, reconnecting fast, as the tests need.
    func l4lb(
        backends: [BackendSpec] = [],
        redis: RedisServer,
        _ flags: [String] = [],
        logger: Logger? = nil,
        tune: (inout RunCommand.Settings) -> Void = { _ in }
    ) async throws -> Application {
        try await self.l4lb(backends: backends, ["--redis", redis.url] + flags, logger: logger) { settings in
            settings.controlPlane?.commandTimeout = .seconds(2)
            settings.controlPlane?.initialReconnectDelay = .milliseconds(50)
            settings.controlPlane?.maximumReconnectDelay = .milliseconds(400)
            settings.controlPlane?.statusInterval = .milliseconds(200)
            tune(&settings)
        }
    }

    /// A redis-server for this test, stopped when the test ends.
    func redis() async throws -> RedisServer {
        let server = try await RedisServer()
        self.onStop { server.kill() }
        return server
    }
}

extension Application {
    /// The first listener's port.
    var port: Int { self.listenAddresses[0].port! }

    /// The active-connection count l4lb holds for `backend`, for waiting on closes to be seen.
    func activeConnections(_ backend: TestBackend) -> Int {
        self.router.pool.backends.first { $0.address.port == backend.port }?.activeConnections ?? -1
    }

    /// The ports of the backends in the pool now, in pool order.
    var poolPorts: [Int] { self.router.pool.backends.map(\.address.port) }
}

extension TestBackend {
    var spec: BackendSpec { BackendSpec(address: HostAndPort(host: "127.0.0.1", port: self.port)) }

    func spec(weight: Int) -> BackendSpec {
        BackendSpec(address: HostAndPort(host: "127.0.0.1", port: self.port), weight: weight)
    }
}

extension RedisConnection {
    /// PUBLISH, returning how many subscribers got it.
    @discardableResult
    func publish(_ channel: String, _ payload: String) throws -> Int {
        guard case .integer(let count) = try self.command(["PUBLISH", channel, payload]) else { return -1 }
        return count
    }

    /// The pool in the key, decoded; nil when the key is missing.
    func pool(key: String = "serverPool") throws -> [BackendSpec]? {
        guard let text = try self.command(["GET", key]).text else { return nil }
        return try PoolDocument.decode(text)
    }
}
