import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The data plane: accepts clients on every listen address and relays each to a backend that the
/// router's policy picks. One event loop per core; a client and its backend share a loop.
public final class ProxyServer: Sendable {
    public let configuration: ProxyConfiguration
    public let router: Router
    private let group: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    private let connector: BackendConnector
    private let registry: ConnectionRegistry
    private let dependencies: BackendConnectHandler.Dependencies
    private let logger: Logger
    private let listeners = NIOLockedValueBox<[Channel]>([])
    /// Retires dead backends and brings them back.
    public let health: HealthChecker
    private let proxyHeaderRefusals = RateLimitedLog()

    /// - Parameters:
    ///   - group: event loops to run on; by default the server makes and owns
    ///     `configuration.eventLoopThreads` of them.
    ///   - healthEvents: called with every backend health change, to publish it.
    public init(
        configuration: ProxyConfiguration,
        router: Router,
        logger: Logger,
        group: MultiThreadedEventLoopGroup? = nil,
        healthEvents: (@Sendable (HealthEvent) -> Void)? = nil,
        accessLog: AccessLog? = nil
    ) {
        self.configuration = configuration
        self.router = router
        self.logger = logger
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
        self.ownsGroup = group == nil
        let loops = Array(self.group.makeIterator())
        self.connector = BackendConnector(loops: loops, connectTimeout: configuration.connectTimeout)
        self.registry = ConnectionRegistry(loops: loops, limit: configuration.maxConnections)
        self.health = HealthChecker(
            router: router,
            settings: configuration.health,
            loop: loops[0],
            instance: configuration.instanceID,
            logger: logger,
            events: healthEvents
        )
        self.dependencies = .init(
            router: router,
            connector: self.connector,
            connectAttempts: max(1, configuration.connectAttempts),
            waitsForProxyHeader: configuration.acceptProxyProtocol != nil,
            maxPendingBytes: configuration.maxPendingBytes,
            logger: logger,
            health: self.health,
            accessLog: accessLog,
            sendProxyProtocol: configuration.sendProxyProtocol,
            retryOnReset: configuration.retryOnReset
        )
    }

    /// Client connections open now.
    public var activeConnections: Int { self.registry.count }
    /// Client connections accepted since start.
    public var acceptedConnections: Int { self.registry.acceptedTotal }
    /// Times accepting paused because `--max-connections` were open (clients then wait in the
    /// kernel's listen queue).
    public var acceptPauses: Int { self.registry.pausesTotal }
    /// The event loops, for other services (the admin endpoint) to run on.
    public var eventLoopGroup: MultiThreadedEventLoopGroup { self.group }

    /// The addresses actually bound (with the kernel's ports where port 0 was asked for).
    public var localAddresses: [SocketAddress] {
        self.listeners.withLockedValue { $0.compactMap(\.localAddress) }
    }

    /// Binds every listen address; throws a one-line error, binding nothing, if any fails.
    @discardableResult
    public func start() async throws -> [SocketAddress] {
        let bootstrap = self.makeServerBootstrap()
        var bound: [Channel] = []
        for address in self.configuration.listen {
            do {
                let socketAddress = try Self.listenSocketAddress(address)
                bound.append(try await bootstrap.bind(to: socketAddress).get())
            } catch {
                for channel in bound { try? await channel.close() }
                let reason = (error as? L4LBError)?.message ?? Describe.error(error)
                throw L4LBError(.bindFailed, "cannot listen on \(address): \(reason)")
            }
        }
        self.listeners.withLockedValue { $0 = bound }
        for channel in bound {
            self.logger.info("listening", metadata: ["address": "\(Describe.address(channel.localAddress))"])
        }
        return bound.compactMap(\.localAddress)
    }

    /// Stops accepting new clients; open connections go on.
    public func stopAccepting() async {
        let channels = self.listeners.withLockedValue { channels in
            defer { channels = [] }
            return channels
        }
        for channel in channels {
            try? await channel.close()
        }
    }

    /// Waits until every client connection has closed or `timeout` has passed; returns how many are
    /// still open.
    public func drain(timeout: TimeAmount) async -> Int {
        let deadline = NIODeadline.now() + timeout
        while self.registry.count > 0, NIODeadline.now() < deadline {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return self.registry.count
    }

    /// Closes every client connection now, and with each its backend connection.
    public func closeAllConnections() async {
        await self.registry.closeAll()
    }

    /// Stops accepting, closes everything and, if the server made its event loops, stops them.
    public func shutdown() async {
        await self.health.stop()
        await self.stopAccepting()
        await self.closeAllConnections()
        if self.ownsGroup {
            try? await self.group.shutdownGracefully()
        }
    }

    private func makeServerBootstrap() -> ServerBootstrap {
        let dependencies = self.dependencies
        let registry = self.registry
        let maxConnections = self.configuration.maxConnections
        let idleTimeout = self.configuration.idleTimeout
        let proxyHeaderTimeout = self.configuration.acceptProxyProtocol
        let proxyHeaderRefusals = self.proxyHeaderRefusals
        let logger = self.logger
        let limited = maxConnections != nil
        var bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: Int32(clamping: self.configuration.backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        if limited {
            // Accept one connection per read, so that the gate is asked before each.
            bootstrap = bootstrap.serverChannelOption(.maxMessagesPerRead, value: 1)
        }
        return
            bootstrap
            .serverChannelInitializer { channel in
                guard limited else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(registry.makeAcceptGate(on: channel.eventLoop))
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let outcome = ConnectionOutcome()
                registry.admit(channel, outcome: outcome)
                do {
                    let handlers = channel.pipeline.syncOperations
                    if let proxyHeaderTimeout {
                        try handlers.addHandler(
                            ProxyProtocolHandler(
                                timeout: proxyHeaderTimeout,
                                logger: logger,
                                refusals: proxyHeaderRefusals,
                                outcome: outcome
                            )
                        )
                    }
                    if let idleTimeout {
                        try handlers.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                        try handlers.addHandler(IdleTimeoutHandler(outcome: outcome))
                    }
                    try handlers.addHandler(BackendConnectHandler(dependencies: dependencies, outcome: outcome))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
    }

    private static func listenSocketAddress(_ address: HostAndPort) throws -> SocketAddress {
        let host = address.host == "*" ? "0.0.0.0" : address.host
        return try BackendResolver.resolve(HostAndPort(host: host, port: address.port))
    }
}
