import LBKit
import Logging
import NIOCore
import Policies

extension TestResources {
    /// A redis-server for this test, stopped when the test ends.
    func redis() async throws -> RedisServer {
        let server = try await RedisServer()
        self.onStop { server.kill() }
        return server
    }

    /// l4lb's control plane on `proxy`'s router, wired as the executable wires it.
    @discardableResult
    func controlPlane(
        for proxy: ProxyHarness,
        redis: RedisServer,
        prefix: String? = nil,
        policy: PolicySpec = PolicySpec(name: "round-robin"),
        policies: PolicyRegistry = BuiltinPolicies.makeRegistry()
    ) async -> ControlPlane {
        var logger = Logger(label: "l4lb-test-control")
        logger.logLevel = .critical
        let controlPlane = ControlPlane(
            configuration: ControlPlaneConfiguration(
                endpoint: redis.endpoint,
                names: RedisNames(prefix: prefix),
                commandTimeout: .seconds(2),
                initialReconnectDelay: .milliseconds(50),
                maximumReconnectDelay: .milliseconds(400)
            ),
            router: proxy.router,
            policies: policies,
            initialPolicy: policy,
            logger: logger
        )
        await controlPlane.start()
        self.onStop { await controlPlane.stop() }
        return controlPlane
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

extension ProxyHarness {
    /// The ports of the backends in the pool now, in pool order.
    var poolPorts: [Int] { self.router.pool.backends.map(\.address.port) }
}
