import ArgumentParser
import Foundation
import LBKit
import Logging
import NIOCore
import Policies
import ServiceLifecycle

/// `l4lb run` (the default): parse flags into a `ProxyConfiguration`, wire the data plane and run it
/// until SIGTERM or SIGINT. Only parsing and wiring live here.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the load balancer (the default subcommand)."
    )

    @Option(name: .customLong("listen"), help: "Address to accept clients on, host:port or [ipv6]:port; repeatable.")
    var listen: [String] = ["127.0.0.1:8080"]

    @Option(
        name: .customLong("backend"),
        help: "Backend host:port[,weight=N][,region=NAME]; repeatable."
    )
    var backends: [String] = []

    @Option(help: "Balancing policy: round-robin or least-connections (see `l4lb policies`).")
    var policy: String = "round-robin"

    @Option(parsing: .unconditional, help: "Longest wait for a backend's TCP handshake (e.g. 500ms, 3s).")
    var connectTimeout: String = "3s"

    @Option(parsing: .unconditional, help: "Close a connection after this long with no traffic either way; 0 = never.")
    var idleTimeout: String = "0"

    @Option(
        parsing: .unconditional,
        help: "Most client connections open at once; further clients are refused. 0 = no limit."
    )
    var maxConnections: Int = 0

    @Option(parsing: .unconditional, help: "Backends to try for one client before closing it.")
    var connectAttempts: Int = 3

    @Option(
        parsing: .unconditional,
        help: "On SIGTERM/SIGINT, how long open connections may finish before they are closed."
    )
    var drainTimeout: String = "10s"

    @Option(parsing: .unconditional, help: "Event-loop threads; 0 = one per core.")
    var threads: Int = 0

    @Flag(help: "Expect a PROXY protocol v1 or v2 header on every client connection and use its client address.")
    var acceptProxyProtocol = false

    @Option(
        parsing: .unconditional,
        help: "With --accept-proxy-protocol: close a client that sends no valid header this fast."
    )
    var proxyProtocolTimeout: String = "3s"

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(help: "This instance's name in health events and its Redis status key (default: host name and pid).")
    var instanceID: String?

    @OptionGroup var redis: RedisOptions

    @OptionGroup var health: HealthOptions

    @OptionGroup var plugins: PluginOptions

    func run() async throws {
        let settings: (ProxyConfiguration, PolicySpec, Logger.Level)
        let controlPlaneConfiguration: ControlPlaneConfiguration?
        do {
            settings = try self.makeSettings()
            controlPlaneConfiguration = try self.redis.makeConfiguration()
        } catch {
            throw exitWithOperatorError(error.message)
        }
        let (configuration, policySpec, level) = settings
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "l4lb")

        let catalog = self.plugins.makeCatalog()
        let (policies, _) = self.plugins.makeRegistry(catalog: catalog, logger: logger)
        let router: Router
        do {
            let policy = try policies.makePolicy(policySpec)
            router = Router(policy: policy)
            try router.setPool(configuration.backends)
        } catch {
            throw exitWithOperatorError(error.message)
        }
        // Logged once the command line is known to be good, so that a bad flag stays a single line.
        catalog.log(to: logger)
        // Redis first: when it is reachable, its pool and policy are in force before the first client.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        var controlPlane: ControlPlane?
        if let controlPlaneConfiguration {
            let started = ControlPlane(
                configuration: controlPlaneConfiguration,
                router: router,
                policies: policies,
                initialPolicy: policySpec,
                logger: logger
            )
            await started.start()
            services.append(.init(service: ControlPlaneService(controlPlane: started)))
            controlPlane = started
        }
        let publisher = controlPlane
        let server = ProxyServer(
            configuration: configuration,
            router: router,
            logger: logger,
            healthEvents: { event in publisher?.publishEvent(event.json) }
        )
        if let controlPlane {
            let startedAt = Date()
            let instance = configuration.instanceID
            controlPlane.reportStatus(instance: instance) { [statistics = controlPlane.statistics] in
                InstanceStatus.json(
                    instance: instance,
                    startedAt: startedAt,
                    router: router,
                    redisConnected: statistics.isConnected
                )
            }
        }
        do {
            try await server.start()
        } catch {
            await server.shutdown()
            throw exitWithOperatorError((error as? L4LBError)?.message ?? "\(error)")
        }
        logger.info(
            "l4lb started",
            metadata: [
                "policy": "\(router.policy.name)",
                "backends": "\(router.pool.specs.map(\.description).joined(separator: " "))",
            ]
        )
        if router.pool.isEmpty {
            logger.warning("the pool is empty: clients are refused until a backend is added")
        }
        let group = ServiceGroup(
            configuration: .init(
                // Shut down in reverse order: the proxy drains before the control plane stops.
                services: services + [.init(service: ProxyService(server: server, logger: logger))],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
        try await group.run()
    }

    /// Every flag checked and converted here, so a bad value is one clear line before anything listens.
    private func makeSettings() throws(L4LBError) -> (ProxyConfiguration, PolicySpec, Logger.Level) {
        guard !self.listen.isEmpty else {
            throw L4LBError(.invalidAddress, "--listen: at least one address is needed")
        }
        var listen: [HostAndPort] = []
        for text in self.listen {
            listen.append(try HostAndPort(parsing: text, allowPortZero: true))
        }
        var backends: [BackendSpec] = []
        for text in self.backends {
            let spec = try BackendSpec(parsing: text)
            guard !backends.contains(where: { $0.address == spec.address }) else {
                throw L4LBError(.invalidBackend, "--backend: \(spec.address) is listed twice")
            }
            backends.append(spec)
        }
        let policy = try PolicySpec(parsing: self.policy)
        let connectTimeout = try DurationParser.parse(self.connectTimeout, flag: "--connect-timeout")
        guard connectTimeout > .zero else {
            throw L4LBError(.invalidDuration, "--connect-timeout must be more than 0")
        }
        let idleTimeout = try DurationParser.parse(self.idleTimeout, flag: "--idle-timeout")
        let drainTimeout = try DurationParser.parse(self.drainTimeout, flag: "--drain-timeout")
        guard self.maxConnections >= 0 else {
            throw L4LBError(.invalidValue, "--max-connections must be 0 (no limit) or more")
        }
        guard (1...100).contains(self.connectAttempts) else {
            throw L4LBError(.invalidValue, "--connect-attempts must be in 1-100")
        }
        guard (0...1024).contains(self.threads) else {
            throw L4LBError(.invalidValue, "--threads must be in 0-1024 (0 = one per core)")
        }
        guard let level = Logger.Level(rawValue: self.logLevel.lowercased()) else {
            throw L4LBError(
                .invalidValue,
                "--log-level: '\(self.logLevel)' is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        let health = try self.health.makeSettings(probeTimeout: connectTimeout)
        let proxyProtocolTimeout = try DurationParser.parse(self.proxyProtocolTimeout, flag: "--proxy-protocol-timeout")
        guard proxyProtocolTimeout > .zero else {
            throw L4LBError(.invalidDuration, "--proxy-protocol-timeout must be more than 0")
        }
        if let instanceID = self.instanceID, instanceID.isEmpty || instanceID.contains(" ") {
            throw L4LBError(.invalidValue, "--instance-id must be a non-empty word without spaces")
        }
        let configuration = ProxyConfiguration(
            listen: listen,
            backends: backends,
            connectTimeout: connectTimeout,
            idleTimeout: idleTimeout == .zero ? nil : idleTimeout,
            maxConnections: self.maxConnections == 0 ? nil : self.maxConnections,
            connectAttempts: self.connectAttempts,
            drainTimeout: drainTimeout,
            eventLoopThreads: self.threads == 0 ? System.coreCount : self.threads,
            acceptProxyProtocol: self.acceptProxyProtocol ? proxyProtocolTimeout : nil,
            health: health,
            instanceID: self.instanceID ?? ProxyConfiguration.defaultInstanceID
        )
        return (configuration, policy, level)
    }
}
