import NIOCore

/// One backend as the data plane sees it: its spec, the address to connect to (resolved when the
/// pool was built, so no resolver runs per connection), its live counters and its health.
public final class Backend: Sendable, CustomStringConvertible {
    public let spec: BackendSpec
    public let socketAddress: SocketAddress
    /// The same address as the kernel takes it, for the relay's `connect`.
    let rawAddress: RawSocketAddress
    public let counters: BackendCounters
    public let health: BackendHealthStatus

    public init(
        spec: BackendSpec,
        socketAddress: SocketAddress,
        counters: BackendCounters = BackendCounters(),
        health: BackendHealthStatus = BackendHealthStatus()
    ) {
        self.spec = spec
        self.socketAddress = socketAddress
        self.rawAddress = RawSocketAddress(socketAddress)
        self.counters = counters
        self.health = health
    }

    public var address: HostAndPort { self.spec.address }
    public var weight: Int { self.spec.weight }
    public var region: String? { self.spec.region }
    public var activeConnections: Int { self.counters.activeConnections }
    public var isRetired: Bool { self.health.isRetired }

    public var description: String { self.spec.address.description }
}
