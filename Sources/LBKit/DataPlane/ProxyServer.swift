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
    private let loops = NIOLockedValueBox<[RelayLoop<SystemKernel>]>([])
    private let bound = NIOLockedValueBox<[SocketAddress]>([])
    /// Every listening socket open now, with its address: what an upgrade hands to the new process.
    private let listenerSockets = NIOLockedValueBox<[(fd: Int32, local: RawSocketAddress)]>([])
    /// The configured addresses listened on now (changed by `updateListeners`).
    private let listenAddresses = NIOLockedValueBox<[HostAndPort]>([])
    /// What each configured address is bound to (the kernel's port for port 0).
    private let boundAddresses = NIOLockedValueBox<[HostAndPort: RawSocketAddress]>([:])
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
    /// Clients handed by the relay thread that accepted them to a less-loaded one.
    public var acceptHandOvers: Int { self.shared.handOverCount }
    /// epoll events dropped because their socket closed earlier in the same batch (`RelayToken`).
    public var staleEvents: Int { self.shared.staleEventCount }
    /// Backend connects refused because no local port was free: l4lb's shortage, not a backend's.
    public var noFreePorts: Int { self.shared.noFreePortsCount }
    /// Clients each relay thread serves now (balanced by `AcceptBalance`).
    public var connectionsPerThread: [Int] {
        self.loops.withLockedValue { loops in loops.map { $0.load.load(ordering: .relaxed) } }
    }

    /// The addresses actually bound (with the kernel's ports where port 0 was asked for).
    public var localAddresses: [SocketAddress] { self.bound.withLockedValue { $0 } }

    /// Binds every listen address on every relay thread and starts the threads; throws a one-line
    /// error, binding nothing, if any address fails.
    @discardableResult
    public func start() async throws -> [SocketAddress] {
        let threads = max(1, self.configuration.relayThreads)
        var loops: [RelayLoop<SystemKernel>] = []
        var addresses: [SocketAddress] = []
        var listening: [Int32] = []
        do {
            for index in 0..<threads {
                loops.append(
                    try RelayLoop(
                        name: "l4lb-relay-\(index)",
                        cpu: self.configuration.relayCPUs?.cpu(forThread: index),
                        kernel: SystemKernel(),
                        shared: self.shared,
                        configuration: self.configuration
                    )
                )
            }
            // Without --max-connections every loop gets its own SO_REUSEPORT socket per address, and
            // the kernel spreads clients evenly across threads. With it, all loops share one socket
            // per address: one accept queue keeps waiting clients in arrival order, which the limit
            // promises (with a queue per thread, a client that came later on another thread could
            // be served first), at the cost of an even spread.
            let shared = self.configuration.maxConnections != nil
            var inherited = self.configuration.inheritedListeners
            for address in self.configuration.listen {
                let wildcard = address.host == "*" || address.host == "0.0.0.0" || address.host == "::"
                do {
                    let target = RawSocketAddress(try BackendResolver.resolveListen(address))
                    // Port 0 ("any port") matches a handed socket on the same address whatever its port:
                    // an upgraded l4lb started with port 0 keeps the port it had.
                    let matches: (InheritedListener) -> Bool = {
                        target.port == 0 ? $0.local.sameHost(as: target) : $0.local.sameEndpoint(as: target)
                    }
                    let handed = inherited.filter(matches)
                    inherited.removeAll(where: matches)
                    if !handed.isEmpty {
                        self.boundAddresses.withLockedValue { $0[address] = handed[0].local }
                        Self.adopt(handed, loops: loops, wildcard: wildcard, shared: shared)
                        listening += handed.map(\.fd)
                        if let socketAddress = handed[0].local.socketAddress { addresses.append(socketAddress) }
                        self.listenerSockets.withLockedValue { $0 += handed.map { ($0.fd, $0.local) } }
                        continue
                    }
                    let (opened, bound) = try Self.open(
                        target,
                        loops: loops,
                        shared: shared,
                        wildcard: wildcard,
                        backlog: self.configuration.backlog
                    )
                    listening += opened
                    self.boundAddresses.withLockedValue { $0[address] = bound }
                    if let socketAddress = bound.socketAddress { addresses.append(socketAddress) }
                    self.listenerSockets.withLockedValue { $0 += opened.map { ($0, bound) } }
                } catch {
                    throw L4LBError(.bindFailed, "cannot listen on \(address): \(error.message)")
                }
            }
            // Handed sockets that no --listen names are listened on beside them (socket activation).
            for socket in inherited {
                let wildcard = socket.local.socketAddress?.ipAddress.map { $0 == "0.0.0.0" || $0 == "::" } ?? false
                Self.adopt([socket], loops: loops, wildcard: wildcard, shared: true)
                listening.append(socket.fd)
                if let socketAddress = socket.local.socketAddress { addresses.append(socketAddress) }
                self.listenerSockets.withLockedValue { $0.append((socket.fd, socket.local)) }
            }
        } catch {
            for fd in listening { close(fd) }
            for loop in loops { loop.closeBeforeStart() }
            throw error
        }
        do {
            // The ports the kernel gave for port 0 are known only now.
            try self.router.setOwnListeners(OwnListeners(addresses))
        } catch {
            for fd in listening { close(fd) }
            for loop in loops { loop.closeBeforeStart() }
            throw error
        }
        self.shared.listenersShared(by: loops.count)
        self.listenAddresses.withLockedValue { $0 = self.configuration.listen }
        for loop in loops { loop.siblings = loops.filter { $0 !== loop } }
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

    /// Handed sockets go to the loops: one each when there are enough and no limit asks for one
    /// queue; otherwise every loop watches every one (shared, EPOLLEXCLUSIVE).
    private static func adopt(
        _ sockets: [InheritedListener],
        loops: [RelayLoop<SystemKernel>],
        wildcard: Bool,
        shared: Bool
    ) {
        if shared || sockets.count < loops.count {
            for socket in sockets {
                for loop in loops {
                    loop.adopt(listener: .init(fd: socket.fd, local: socket.local, wildcard: wildcard, shared: true))
                }
            }
        } else {
            for (index, socket) in sockets.enumerated() {
                loops[index % loops.count].adopt(
                    listener: .init(fd: socket.fd, local: socket.local, wildcard: wildcard, shared: false)
                )
            }
        }
    }

    /// Opens `target` for `loops`: an SO_REUSEPORT socket for each (the kernel spreads clients), or,
    /// with `shared`, one that every loop watches (one accept queue, arrival order kept for
    /// --max-connections). Returns the descriptors and the address bound.
    private static func open(
        _ target: RawSocketAddress,
        loops: [RelayLoop<SystemKernel>],
        shared: Bool,
        wildcard: Bool,
        backlog: Int
    ) throws(L4LBError) -> ([Int32], RawSocketAddress) {
        var target = target
        var opened: [Int32] = []
        var bound: RawSocketAddress?
        do {
            for (index, loop) in loops.enumerated() where !shared || index == 0 {
                let (fd, local) = try SocketCalls.listen(
                    on: target,
                    backlog: Int32(clamping: backlog),
                    reusePort: !shared
                )
                opened.append(fd)
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
        } catch {
            for fd in opened { close(fd) }
            throw error
        }
        return (opened, bound ?? target)
    }

    /// The listening sockets open now and their addresses, for an upgrade to hand over.
    public var listeningSockets: [(fd: Int32, address: SocketAddress?)] {
        self.listenerSockets.withLockedValue { $0.map { ($0.fd, $0.local.socketAddress) } }
    }

    /// Listens on `listen` from now on, without a restart: opens the addresses that are new, and
    /// stops listening on those that are gone (their open connections go on). Throws a one-line
    /// error, changing nothing, if a new address cannot be opened.
    public func updateListeners(
        _ listen: [HostAndPort]
    ) async throws(L4LBError) -> (added: [HostAndPort], removed: [HostAndPort]) {
        let loops = self.loops.withLockedValue { $0 }
        let current = self.listenAddresses.withLockedValue { $0 }
        let added = listen.filter { !current.contains($0) }
        let removed = current.filter { !listen.contains($0) }
        guard !loops.isEmpty, !(added.isEmpty && removed.isEmpty) else { return ([], []) }
        let shared = self.configuration.maxConnections != nil
        // Opened on fresh loops' behalf first: nothing changes unless every new address opens.
        var openings: [(address: HostAndPort, fds: [Int32], bound: RawSocketAddress, wildcard: Bool)] = []
        for address in added {
            let wildcard = address.host == "*" || address.host == "0.0.0.0" || address.host == "::"
            do {
                var target = RawSocketAddress(try BackendResolver.resolveListen(address))
                var fds: [Int32] = []
                var bound: RawSocketAddress?
                for _ in 0..<(shared ? 1 : loops.count) {
                    let (fd, local) = try SocketCalls.listen(
                        on: target,
                        backlog: Int32(clamping: self.configuration.backlog),
                        reusePort: !shared
                    )
                    fds.append(fd)
                    target = local
                    bound = bound ?? local
                }
                openings.append((address, fds, bound ?? target, wildcard))
            } catch {
                for opening in openings { for fd in opening.fds { close(fd) } }
                throw L4LBError(.bindFailed, "cannot listen on \(address): \(error.message)")
            }
        }
        let removedTargets = self.boundAddresses.withLockedValue { bound in removed.compactMap { bound[$0] } }
        let closing = self.listenerSockets.withLockedValue { sockets -> [Int32] in
            let gone = sockets.filter { socket in removedTargets.contains { socket.local.sameEndpoint(as: $0) } }
            sockets.removeAll { socket in removedTargets.contains { socket.local.sameEndpoint(as: $0) } }
            for opening in openings { sockets += opening.fds.map { ($0, opening.bound) } }
            return gone.map(\.fd)
        }
        let release = ListenerRelease(loops: loops.count, fds: closing)
        for (index, loop) in loops.enumerated() {
            var adding: [RelayListener] = []
            for opening in openings {
                let fd = shared ? opening.fds[0] : opening.fds[index]
                adding.append(.init(fd: fd, local: opening.bound, wildcard: opening.wildcard, shared: shared))
            }
            loop.post(.changeListeners(add: adding, remove: removedTargets, release: release))
        }
        await release.waitUntilDone()
        let listening = self.listenerSockets.withLockedValue { $0.compactMap(\.local.socketAddress) }
        // A pool that already holds a new address was accepted before it was ours: named, not undone.
        do throws(L4LBError) {
            try self.router.setOwnListeners(OwnListeners(listening))
        } catch {
            self.logger.error("\(error.message)")
        }
        self.listenAddresses.withLockedValue { $0 = listen }
        self.boundAddresses.withLockedValue { bound in
            for address in removed { bound[address] = nil }
            for opening in openings { bound[opening.address] = opening.bound }
        }
        for opening in openings {
            self.logger.info("listening", metadata: ["address": "\(Describe.address(opening.bound.socketAddress))"])
        }
        for address in removed {
            self.logger.info("stopped listening; open connections go on", metadata: ["address": "\(address)"])
        }
        return (added, removed)
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
