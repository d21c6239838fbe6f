/// Why a proxied connection ended: the access log's `reason` field and the label of
/// `l4lb_connections_closed_total`.
public enum ConnectionCloseReason: String, Equatable, Sendable, CaseIterable {
    /// The client sent FIN (or closed) first.
    case clientClosed = "client-closed"
    /// The backend sent FIN (or closed) first.
    case backendClosed = "backend-closed"
    case clientError = "client-error"
    case backendError = "backend-error"
    case idleTimeout = "idle-timeout"
    /// No backend was available, or every attempt failed.
    case noBackend = "no-backend"
    case proxyHeaderInvalid = "proxy-header-invalid"
    /// l4lb closed it (shutdown after the drain timeout).
    case closedByL4LB = "closed-by-l4lb"
    /// l4lb could not serve it for want of its own resources (out of file descriptors).
    case localError = "l4lb-error"
}

/// One closed client connection, as the data plane hands it to its observers, at the moment it
/// closes (an observer that needs the wall-clock time reads it then; most do not, so the relay does
/// not pay for it).
public struct ConnectionRecord: Sendable {
    /// The client (from the PROXY protocol header when one was accepted).
    public var client: ClientAddress
    /// The backend it ended with; nil when it never reached one.
    public var backend: HostAndPort?
    public var bytesFromClient: UInt64
    public var bytesFromBackend: UInt64
    /// From accept to close.
    public var duration: Duration
    public var reason: ConnectionCloseReason
    /// Backends tried for this client before the one it ended with (failed connects, resets
    /// before the first byte); for a client refused, the tries after the first.
    public var retries: Int

    public init(
        client: ClientAddress,
        backend: HostAndPort?,
        bytesFromClient: UInt64,
        bytesFromBackend: UInt64,
        duration: Duration,
        reason: ConnectionCloseReason,
        retries: Int
    ) {
        self.client = client
        self.backend = backend
        self.bytesFromClient = bytesFromClient
        self.bytesFromBackend = bytesFromBackend
        self.duration = duration
        self.reason = reason
        self.retries = retries
    }
}
