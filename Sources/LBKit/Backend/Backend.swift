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
    /// The name (`host:port`) and region as bytes that live as long as the backend, so that the
    /// plugin adapter can hand C pointers to them on every pick without building strings.
    nonisolated(unsafe) let cName: UnsafeMutableBufferPointer<CChar>
    nonisolated(unsafe) let cRegion: UnsafeMutableBufferPointer<CChar>

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
        self.cName = Self.copy(spec.address.description)
        self.cRegion = Self.copy(spec.region ?? "")
    }

    deinit {
        self.cName.deallocate()
        self.cRegion.deallocate()
    }

    private static func copy(_ text: String) -> UnsafeMutableBufferPointer<CChar> {
        let bytes = Array(text.utf8)
        let buffer = UnsafeMutableBufferPointer<CChar>.allocate(capacity: max(bytes.count, 1))
        for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
        return UnsafeMutableBufferPointer(rebasing: buffer[0..<bytes.count])
    }

    public var address: HostAndPort { self.spec.address }
    public var weight: Int { self.spec.weight }
    public var region: String? { self.spec.region }
    public var activeConnections: Int { self.counters.activeConnections }
    public var isRetired: Bool { self.health.isRetired }

    public var description: String { self.spec.address.description }
}
