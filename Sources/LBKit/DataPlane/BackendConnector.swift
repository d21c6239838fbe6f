import NIOCore
import NIOPosix

/// Opens backend connections on the client's own event loop, so that both channels of a relay share
/// one thread and the glue between them needs no lock.
///
/// The bootstraps are built once per loop at start, not per connection: connection setup is where a
/// proxy on SwiftNIO pays most against HAProxy, so nothing is built here that can be built earlier.
final class BackendConnector: Sendable {
    /// A bootstrap is not Sendable; each one is bound to the loop it connects from.
    private let bootstraps: [ObjectIdentifier: NIOLoopBoundBox<ClientBootstrap>]

    init(loops: [any EventLoop], connectTimeout: TimeAmount) {
        var bootstraps: [ObjectIdentifier: NIOLoopBoundBox<ClientBootstrap>] = [:]
        for loop in loops {
            let bootstrap = ClientBootstrap(group: loop)
                .connectTimeout(connectTimeout)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            bootstraps[ObjectIdentifier(loop)] = .makeBoxSendingValue(
                bootstrap,
                as: ClientBootstrap.self,
                eventLoop: loop
            )
        }
        self.bootstraps = bootstraps
    }

    /// Connects to `address` from `loop`; the future completes on `loop`.
    func connect(to address: SocketAddress, on loop: any EventLoop) -> EventLoopFuture<Channel> {
        guard let bootstrap = self.bootstraps[ObjectIdentifier(loop)] else {
            preconditionFailure("connect requested on an event loop the connector was not built for")
        }
        return bootstrap.value.connect(to: address)
    }
}
