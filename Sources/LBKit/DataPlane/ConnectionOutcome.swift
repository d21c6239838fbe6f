import NIOCore

/// How one client connection ended, decided by whichever part of its pipeline saw the end first.
/// Confined to the connection's event loop.
final class ConnectionOutcome {
    enum Reason: String, Sendable {
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
        /// l4lb closed it (shutdown after the drain timeout, or a limit).
        case closedByL4LB = "closed-by-l4lb"
    }

    let accepted = NIODeadline.now()
    private(set) var reason: Reason?
    /// Work for when the client channel has closed (release the backend, count bytes, log), run by
    /// the connection registry's one close callback rather than by a second one.
    var whenClosed: (() -> Void)?

    /// Records `reason` unless an earlier one is already known.
    func record(_ reason: Reason) {
        if self.reason == nil { self.reason = reason }
    }
}

@available(*, unavailable)
extension ConnectionOutcome: Sendable {}
