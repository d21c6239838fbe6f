import NIOCore

/// Closes a client connection (and so its backend connection) when NIO's `IdleStateHandler`, placed
/// before it on the client channel, reports no byte in either direction for the idle timeout.
/// The client channel sees both directions: reads are client bytes, writes are backend bytes.
final class IdleTimeoutHandler: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    private let outcome: ConnectionOutcome

    init(outcome: ConnectionOutcome) {
        self.outcome = outcome
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            self.outcome.record(.idleTimeout)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension IdleTimeoutHandler: Sendable {}
