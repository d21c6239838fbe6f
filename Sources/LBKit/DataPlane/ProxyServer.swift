import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The data plane: accepts clients on every listen address and relays each to a backend that the
/// router's policy picks, on `relayThreads` relay threads (`RelayLoop`); a client and its backend
/// connection stay on the thread that accepted it.
///
/// SwiftNIO is kept for what is not the relay: the health checker's probes run on an event loop of
/// `group` (one thread made here if none is given), as does the admin endpoint.
public final class ProxyServer: Sendable {
    public let configuration: ProxyConfiguration
    public let router: Router
    private let group: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    private let shared: RelayShared
    private let logger: Logger
    private let loops = NIOLockedValueBox<[RelayLoop]>([])
    private let bound = NIOLockedValueBox<[SocketAddress]>([])
    /// Retires dead backends and brings them back.
    public let health: HealthChecker

    /// - Parameters:
    ///   - group: the event loop for health probes; by default the server makes and owns one.
    ///   - healthEvents: called with every backend health change, to publish it.
    ///   - observers: told of every closed connection (the access log, the metrics).
    public init(
        configuration: ProxyConfiguration,
        router: Router,
        logger: Logger,
        group: MultiThreadedEventLoopGroup? = nil,
        healthEvents: (@Sendable (HealthEvent) -> Void)? = nil,
        observers: [any ConnectionObserver] = []
    ) {
        self.configuration = configuration
        self.router = router
        self.logger = logger
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.ownsGroup = group == nil
        self.health = HealthChecker(
            router: router,
            settings: configuration.health,
            loop: self.group.next(),
            instance: configuration.instanceID,
            logger: logger,
            events: healthEvents
        )
        self.shared = RelayShared(
            router: router,
            health: self.health,
            logger: logger,
            observers: observers,
            configuration: configuration
        )
    }

    /// Client connections open now.
    public var activeConnections: Int { self.shared.activeCount }
    /// Client connections accepted since start.
    public var acceptedConnections: Int { self.shared.acceptedCount }
    /// Times a relay thread paused accepting because `--max-connections` were open (clients then
    /// wait in the kernel's listen queue).
    public var acceptPauses: Int { self.shared.pauseCount }

    /// The addresses actually bound (with the kernel's ports where port 0 was asked for).
    public var localAddresses: [SocketAddress] { self.bound.withLockedValue { $0 } }

    /// Binds every listen address on every relay thread and starts the threads; throws a one-line
    /// error, binding nothing, if any address fails.
    @discardableResult
    public func start() async throws -> [SocketAddress] {
        let threads = max(1, self.configuration.relayThreads)
        var loops: [RelayLoop] = []
        var addresses: [SocketAddress] = []
        var listening: [Int32] = []
        do {
            for index in 0..<threads {
                loops.append(
                    try RelayLoop(name: "l4lb-relay-\(index)", shared: self.shared, configuration: self.configuration)
                )
            }
            // Without --max-connections every loop gets its own SO_REUSEPORT socket per address, and
            // the kernel spreads clients evenly across threads. With it, all loops share one socket
            // per address: one accept queue keeps waiting clients in arrival order, which the limit
            // promises (with a queue per thread, a client that came later on another thread could
            // be served first), at the cost of an even spread.
            let shared = self.configuration.maxConnections != nil
            for address in self.configuration.listen {
                let wildcard = address.host == "*" || address.host == "0.0.0.0" || address.host == "::"
                do {
                    var target = RawSocketAddress(try BackendResolver.resolveListen(address))
                    var bound: RawSocketAddress?
                    for (index, loop) in loops.enumerated() where !shared || index == 0 {
                        let (fd, local) = try SocketCalls.listen(
                            on: target,
                            backlog: Int32(clamping: self.configuration.backlog),
                            reusePort: !shared
                        )
                        listening.append(fd)
                        // Port 0: every other loop listens on the port the kernel gave the first.
                        target = local
                        bound = bound ?? local
                        if shared {
                            for each in loops {
                                each.adopt(listener: .init(fd: fd, local: local, wildcard: wildcard, shared: true))
                            }
                        } else {
                            loop.adopt(listener: .init(fd: fd, local: local, wildcard: wildcard, shared: false))
                        }
                    }
                    if let socketAddress = bound?.socketAddress { addresses.append(socketAddress) }
                } catch {
                    throw L4LBError(.bindFailed, "cannot listen on \(address): \(error.message)")
                }
            }
        } catch {
            for fd in listening { close(fd) }
            for loop in loops { loop.closeBeforeStart() }
            throw error
        }
        self.shared.listenersShared(by: loops.count)
        for loop in loops { loop.start() }
        self.loops.withLockedValue { $0 = loops }
        self.bound.withLockedValue { $0 = addresses }
        for address in addresses {
            self.logger.info(
                "listening",
                metadata: ["address": "\(Describe.address(address))", "threads": "\(threads)"]
            )
        }
        return addresses
    }

    /// Stops accepting new clients, and returns once the listening sockets are closed (a client
    /// connecting then is refused); open connections go on.
    public func stopAccepting() async {
        let loops = self.loops.withLockedValue { $0 }
        guard !loops.isEmpty else { return }
        for loop in loops { loop.post(.stopAccepting) }
        await self.shared.waitUntilListenersClosed()
    }

    /// Waits until every client connection has closed or `timeout` has passed; returns how many are
    /// still open.
    public func drain(timeout: TimeAmount) async -> Int {
        await self.shared.waitUntilIdle(timeout: .nanoseconds(timeout.nanoseconds))
        return self.shared.activeCount
    }

    /// Closes every client connection now, and with each its backend connection.
    public func closeAllConnections() async {
        for loop in self.loops.withLockedValue({ $0 }) { loop.post(.closeAll) }
        await self.shared.waitUntilIdle(timeout: .seconds(5))
    }

    /// Stops accepting, closes everything, ends the relay threads and, if the server made its event
    /// loop, stops it.
    public func shutdown() async {
        await self.health.stop()
        let loops = self.loops.withLockedValue { loops in
            defer { loops = [] }
            return loops
        }
        for loop in loops { loop.post(.stop) }
        for loop in loops { loop.waitUntilExited() }
        if self.ownsGroup {
            try? await self.group.shutdownGracefully()
        }
    }
}
