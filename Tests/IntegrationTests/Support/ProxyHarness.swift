import LBKit
import Logging
import NIOCore
import NIOPosix
import Policies

#if canImport(Glibc)
import Glibc
#endif

/// l4lb's real data plane, wired as the executable wires it, listening on 127.0.0.1 port 0.
struct ProxyHarness {
    let server: ProxyServer
    let router: Router
    let port: Int

    static func start(
        backends: [BackendSpec],
        policy: any LoadBalancingPolicy = RoundRobinPolicy(),
        threads: Int = 2,
        configure: (inout ProxyConfiguration) -> Void = { _ in },
        healthEvents: (@Sendable (HealthEvent) -> Void)? = nil,
        accessLog: AccessLog? = nil
    ) async throws -> ProxyHarness {
        var configuration = ProxyConfiguration(listen: [HostAndPort(host: "127.0.0.1", port: 0)], backends: backends)
        configuration.eventLoopThreads = threads
        configure(&configuration)
        let router = Router(policy: policy)
        try router.setPool(configuration.backends)
        var logger = Logger(label: "l4lb-test")
        logger.logLevel = .critical
        let server = ProxyServer(
            configuration: configuration,
            router: router,
            logger: logger,
            healthEvents: healthEvents,
            accessLog: accessLog
        )
        let addresses = try await server.start()
        return ProxyHarness(server: server, router: router, port: addresses[0].port!)
    }

    func stop() async {
        await self.server.shutdown()
    }

    /// The active-connection count l4lb holds for `address`, for waiting on closes to be seen.
    func activeConnections(_ backend: TestBackend) -> Int {
        self.router.pool.backends.first { $0.address.port == backend.port }?.activeConnections ?? -1
    }
}

extension TestBackend {
    var spec: BackendSpec { BackendSpec(address: HostAndPort(host: "127.0.0.1", port: self.port)) }

    func spec(weight: Int) -> BackendSpec {
        BackendSpec(address: HostAndPort(host: "127.0.0.1", port: self.port), weight: weight)
    }
}

/// A port on 127.0.0.1 held by a bound socket that does not listen: connecting to it is refused,
/// and no other socket (a server of a test running in parallel, or an outgoing connection's
/// ephemeral port, which may even connect to itself) can take the port until `release()`.
/// That is what a dead backend looks like, without a window in which the port is up for grabs.
///
/// The socket is bound with SO_REUSEPORT, as `TestBackend`'s listeners are, so a reservation can be
/// taken while a backend still listens and a backend can restart on the port before it is released:
/// the port changes hands with no gap. Only listening sockets share a reuseport group's connections,
/// so a reserved port still refuses them.
final class PortReservation: @unchecked Sendable {
    let port: Int
    private var fd: Int32

    /// Reserves a port of the kernel's choice.
    convenience init() {
        // A port of the kernel's choice is free by definition.
        try! self.init(port: 0)
    }

    /// Reserves `port`; fails if a socket without SO_REUSEPORT holds it.
    init(port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw PortReservationError(message: "cannot reserve 127.0.0.1:\(port): \(reason)")
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit {
        self.release()
    }

    var spec: BackendSpec { BackendSpec(address: HostAndPort(host: "127.0.0.1", port: self.port)) }

    /// Frees the port (for a backend about to start on it).
    func release() {
        if self.fd >= 0 {
            close(self.fd)
            self.fd = -1
        }
    }
}

struct PortReservationError: Error, CustomStringConvertible {
    let message: String
    var description: String { self.message }
}

/// Waits, in bounded steps, until `condition` holds; false if `timeoutSeconds` passed first.
func eventually(timeoutSeconds: Double = 5, _ condition: () -> Bool) async -> Bool {
    let steps = Int(timeoutSeconds / 0.02)
    for _ in 0..<steps {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 20_000_000)
    }
    return condition()
}

/// `eventually` for conditions that must be awaited.
func eventuallyAsync(timeoutSeconds: Double = 5, _ condition: () async -> Bool) async -> Bool {
    let steps = Int(timeoutSeconds / 0.02)
    for _ in 0..<steps {
        if await condition() { return true }
        try? await Task.sleep(nanoseconds: 20_000_000)
    }
    return await condition()
}
