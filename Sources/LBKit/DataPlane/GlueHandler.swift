import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// One half of a pair that relays bytes between a client channel and its backend channel, after
/// SwiftNIO's connect-proxy "glue": both channels live on one event loop, so the pair talks through
/// plain method calls and needs no lock.
///
/// - Back-pressure: a side reads only while its partner is writable; when the partner's write buffer
///   passes its high-water mark, reading stops until it drains, so memory per connection stays at a
///   few buffers however fast one side sends and however slowly the other reads.
/// - Half-close: an EOF read on one side is passed on as a write shutdown of the other (both channels
///   have `allowRemoteHalfClosure`); NIO closes a channel fully once both its directions are shut.
/// - No byte is lost on the way out: NIO turns an output shutdown of a channel whose input is already
///   shut into a full close that discards queued writes, so every shutdown that follows a clean EOF
///   waits until the writes queued before it have gone out. Only an error closes the partner at once.
final class GlueHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Side {
        case client
        case backend
    }

    private let side: Side
    private let outcome: ConnectionOutcome
    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// This side ended in an error (reset, write failure): its partner is aborted, not drained.
    /// Anything else is an orderly end, even when no `inputClosed` was seen: NIO closes a channel
    /// whose output is already shut straight away on EOF, without that event.
    private var failed = false
    /// Bytes this side has read and handed to its partner.
    private(set) var bytesRead: UInt64 = 0
    /// On the backend side: the backend and the health checker to tell about it. Its first byte
    /// counts as the connect's success; a reset before any byte (a backend that accepts and drops
    /// connections) as a failed connect.
    private var watched: (backend: Backend, health: HealthChecker)?
    /// On the backend side, while the backend has not answered: whom to offer the client to if the
    /// backend resets now, and to tell once it answers. Strong, not weak (a weak reference would
    /// allocate a side table per connection): the cycle with the trial's owner ends when the trial
    /// does, or when this handler leaves its closed channel.
    private var trial: (any BackendTrial)?
    /// This side's connection was given up for a retry elsewhere: its end is not the relay's end.
    private var detached = false
    /// A write during the trial failed with a reset. NIO closes a channel whose write fails without
    /// an `errorCaught`, so the reset is known only from the write's promise.
    private var resetOnWrite = false

    private init(side: Side, outcome: ConnectionOutcome) {
        self.side = side
        self.outcome = outcome
    }

    /// Two handlers that relay to each other: one for the client channel, one for the backend's.
    /// Whichever side ends first records why in `outcome`.
    /// Tells `health` about `backend` from this (backend-side) handler's first byte or early reset.
    func watch(_ backend: Backend, health: HealthChecker) {
        self.watched = (backend, health)
    }

    /// Lets `trial` move the client to another backend if this (backend-side) handler's backend
    /// resets before its first byte.
    func offerRetry(to trial: any BackendTrial) {
        self.trial = trial
    }

    /// Stops offering retries: the client stays with this backend whatever happens.
    func endTrial() {
        self.trial = nil
    }

    static func matchedPair(outcome: ConnectionOutcome) -> (client: GlueHandler, backend: GlueHandler) {
        let client = GlueHandler(side: .client, outcome: outcome)
        let backend = GlueHandler(side: .backend, outcome: outcome)
        client.partner = backend
        backend.partner = client
        return (client, backend)
    }
}

extension GlueHandler {
    fileprivate func partnerWrite(_ buffer: ByteBuffer) {
        guard let context = self.context else { return }
        // During the trial (a few writes per connection) a promise watches for the backend's reset.
        context.write(self.wrapOutboundOut(buffer), promise: self.trial == nil ? nil : self.trialWritePromise(context))
    }

    /// Writes `buffer` to this (backend-side) handler's backend, as relayed bytes are: for the bytes
    /// a client sent before the backend was connected.
    func writeToBackend(_ buffer: ByteBuffer) {
        self.partnerWrite(buffer)
    }

    private func trialWritePromise(_ context: ChannelHandlerContext) -> EventLoopPromise<Void> {
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenFailure { error in
            if Self.isReset(error) { self.resetOnWrite = true }
        }
        return promise
    }

    fileprivate func partnerFlush() {
        self.context?.flush()
    }

    fileprivate func partnerWriteEOF() {
        self.afterQueuedWrites { $0.close(mode: .output, promise: nil) }
    }

    fileprivate func partnerCloseFull() {
        self.context?.close(promise: nil)
    }

    fileprivate func partnerCloseAfterQueuedWrites() {
        self.afterQueuedWrites { $0.close(promise: nil) }
    }

    /// Runs `body` once every write queued so far has gone to the socket (writes complete in order, so
    /// an empty write's promise marks the spot).
    private func afterQueuedWrites(_ body: @escaping (ChannelHandlerContext) -> Void) {
        guard let context = self.context else { return }
        context.writeAndFlush(self.wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            body(context)
        }
    }

    fileprivate func partnerBecameWritable() {
        if self.pendingRead {
            self.pendingRead = false
            self.context?.read()
        }
    }

    fileprivate var partnerWritable: Bool {
        self.context?.channel.isWritable ?? false
    }
}

extension GlueHandler: ChannelDuplexHandler {
    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
        self.watched = nil
        self.trial = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        if self.bytesRead == 0, buffer.readableBytes > 0 {
            if let watched = self.watched {
                self.watched = nil
                watched.health.connectSucceeded(watched.backend)
            }
            self.endTrialAnswered()
        }
        self.bytesRead &+= UInt64(buffer.readableBytes)
        self.partner?.partnerWrite(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        guard !self.detached else { return }
        if self.resetOnWrite, self.bytesRead == 0, self.backendResetBeforeAnswering() {
            return
        }
        self.outcome.record(self.side == .client ? .clientClosed : .backendClosed)
        if self.failed {
            self.partner?.partnerCloseFull()
        } else {
            self.partner?.partnerCloseAfterQueuedWrites()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // EOF from this side: the other side's peer gets a FIN, and may still answer.
            // A backend that closes cleanly has answered, with nothing: that is its answer.
            self.endTrialAnswered()
            self.outcome.record(self.side == .client ? .clientClosed : .backendClosed)
            self.partner?.partnerWriteEOF()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A reset or write error on either side ends the whole relay, unless it is the backend's
        // reset before its first byte and the client can be moved to another backend.
        if self.bytesRead == 0, Self.isReset(error), self.backendResetBeforeAnswering() {
            context.close(promise: nil)
            return
        }
        self.failed = true
        self.outcome.record(self.side == .client ? .clientError : .backendError)
        self.partner?.partnerCloseFull()
        context.close(promise: nil)
    }

    /// This (backend-side) handler's backend reset the connection before its first byte: counts it
    /// against the backend, and offers the client to the trial, if one is on. True if the client was
    /// taken to another backend; this side is then detached from the relay.
    private func backendResetBeforeAnswering() -> Bool {
        guard let watched = self.watched else { return false }
        self.watched = nil
        watched.backend.counters.connectFailed()
        watched.health.resetBeforeFirstByte(watched.backend)
        guard let trial = self.trial else { return false }
        self.trial = nil
        guard trial.backendResetBeforeAnswering() else { return false }
        self.detached = true
        self.partner = nil
        return true
    }

    /// A reset by the peer, seen on a read (ECONNRESET) or on a write (EPIPE).
    private static func isReset(_ error: Error) -> Bool {
        guard let io = error as? IOError else { return false }
        return io.errnoCode == ECONNRESET || io.errnoCode == EPIPE
    }

    private func endTrialAnswered() {
        if let trial = self.trial {
            self.trial = nil
            trial.backendAnswered()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.partner?.partnerBecameWritable()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let partner = self.partner, partner.partnerWritable {
            context.read()
        } else {
            self.pendingRead = true
        }
    }
}

extension GlueHandler: RemovableChannelHandler {}

/// Whoever placed a client on a backend and can still move it elsewhere while that backend has not
/// answered (`BackendConnectHandler`). Called on the connection's event loop.
protocol BackendTrial: AnyObject {
    /// The backend sent its first byte or closed cleanly: the client stays with it.
    func backendAnswered()
    /// The backend reset the connection before its first byte. Returns true if the client was taken
    /// over for another attempt (the caller then closes its channel quietly), false if the relay
    /// should end as for any other reset.
    func backendResetBeforeAnswering() -> Bool
}

@available(*, unavailable)
extension GlueHandler: Sendable {}
