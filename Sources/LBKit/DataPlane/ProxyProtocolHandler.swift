import Logging
import NIOCore

/// Tells the connect handler the client address a PROXY protocol header gave (nil: keep the peer's).
struct ProxyHeaderReceived {
    let client: ClientAddress?
}

/// First on a client channel of a listener with `--accept-proxy-protocol`: collects the PROXY v1 or
/// v2 header, consumes it (the backend never sees it), announces the client address, passes on any
/// bytes that followed it, and leaves. A connection whose header is invalid, or that sends none
/// within the timeout, is closed.
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let logger: Logger
    private let refusals: RateLimitedLog
    private let outcome: ConnectionOutcome
    private var buffered: ByteBuffer?
    private var timer: Scheduled<Void>?
    private var done = false

    init(timeout: TimeAmount, logger: Logger, refusals: RateLimitedLog, outcome: ConnectionOutcome) {
        self.outcome = outcome
        self.timeout = timeout
        self.logger = logger
        self.refusals = refusals
    }

    func channelActive(context: ChannelHandlerContext) {
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) {
            self.refuse(context: context, reason: "no PROXY protocol header within \(self.timeout)")
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.done else {
            context.fireChannelRead(data)
            return
        }
        var incoming = self.unwrapInboundIn(data)
        if self.buffered == nil {
            self.buffered = incoming
        } else {
            self.buffered!.writeBuffer(&incoming)
        }
        guard var buffer = self.buffered else { return }
        switch ProxyProtocolHeader.parse(buffer.readableBytesView) {
        case .needMoreBytes:
            return
        case .invalid(let reason):
            self.refuse(context: context, reason: reason)
        case .header(let client, let length):
            self.done = true
            self.timer?.cancel()
            buffer.moveReaderIndex(forwardBy: length)
            self.buffered = nil
            context.fireUserInboundEventTriggered(ProxyHeaderReceived(client: client))
            if buffer.readableBytes > 0 {
                context.fireChannelRead(self.wrapInboundOut(buffer))
                context.fireChannelReadComplete()
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !self.done, let event = event as? ChannelEvent, case .inputClosed = event {
            // The client finished sending without a whole header: no point waiting for the timeout.
            self.refuse(context: context, reason: "client closed before sending a PROXY protocol header")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        context.fireChannelInactive()
    }

    private func refuse(context: ChannelHandlerContext, reason: String) {
        guard !self.done else { return }
        self.done = true
        self.timer?.cancel()
        self.outcome.record(.proxyHeaderInvalid)
        self.refusals.warning(
            self.logger,
            "closing client: \(reason)",
            metadata: ["peer": "\(Describe.address(context.channel.remoteAddress))"]
        )
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ProxyProtocolHandler: Sendable {}
