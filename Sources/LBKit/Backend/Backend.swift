import NIOCore

/// One backend as the data plane sees it: its spec, the address to connect to (resolved when the
/// pool was built, so no resolver runs per connection) and its live counters.
public final class Backend: Sendable, CustomStringConvertible {
    public let spec: BackendSpec
    public let socketAddress: SocketAddress
    public let counters: BackendCounters

    public init(spec: BackendSpec, socketAddress: SocketAddress, counters: BackendCounters = BackendCounters()) {
        self.spec = spec
        self.socketAddress = socketAddress
        self.counters = counters
    }

    public var address: HostAndPort { self.spec.address }
    public var weight: Int { self.spec.weight }
    public var region: String? { self.spec.region }
    public var activeConnections: Int { self.counters.activeConnections }

    public var description: String { self.spec.address.description }
}
