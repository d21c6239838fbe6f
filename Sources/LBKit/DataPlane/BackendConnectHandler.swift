import Foundation
import Logging
import NIOCore

/// Sits on a newly accepted client channel until its backend has answered: picks a backend with the
/// active policy, connects on the client's event loop, retries elsewhere on failure, joins the two
/// channels with a `GlueHandler` pair, and steps aside.
///
/// Bytes the client sends before the connection is up are kept (up to `maxPendingBytes`, then
/// reading pauses) and forwarded first; an EOF from the client meanwhile is forwarded after them.
///
/// A backend can also fail after its handshake: a crashed process behind a listening socket, or a
/// full accept queue with `tcp_abort_on_overflow`, resets the connection before sending a byte. Until
/// the backend's first byte (the trial), the bytes relayed to it stay referenced here, so such a
/// reset moves the client to another backend with those bytes replayed, as a refused connect would.
/// Past `maxPendingBytes` relayed, or once attempts are used up, the client stays where it is.
final class BackendConnectHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    /// Shared, immutable parts of the data plane, built once at start. A class, so that each new
    /// connection's handler takes one reference instead of copying a dozen fields.
    final class Dependencies: Sendable {
        let router: Router
        let connector: BackendConnector
        let connectAttempts: Int
        /// With `--accept-proxy-protocol` the client address comes from the PROXY header: wait for it.
        let waitsForProxyHeader: Bool
        let maxPendingBytes: Int
        let logger: Logger
        let health: HealthChecker
        /// Where each closed connection is written, when `--access-log` is on.
        let accessLog: AccessLog?
        /// The PROXY protocol header to send to backends first, when `--send-proxy-protocol` is on.
        let sendProxyProtocol: ProxyProtocolEncoder.Version?
        /// Move a client whose backend resets before answering to another backend (`--retry-on-reset`).
        let retryOnReset: Bool
        let noBackendLog = RateLimitedLog()
        let connectFailureLog = RateLimitedLog()

        init(
            router: Router,
            connector: BackendConnector,
            connectAttempts: Int,
            waitsForProxyHeader: Bool,
            maxPendingBytes: Int,
            logger: Logger,
            health: HealthChecker,
            accessLog: AccessLog?,
            sendProxyProtocol: ProxyProtocolEncoder.Version?,
            retryOnReset: Bool
        ) {
            self.router = router
            self.connector = connector
            self.connectAttempts = connectAttempts
            self.waitsForProxyHeader = waitsForProxyHeader
            self.maxPendingBytes = maxPendingBytes
            self.logger = logger
            self.health = health
            self.accessLog = accessLog
            self.sendProxyProtocol = sendProxyProtocol
            self.retryOnReset = retryOnReset
        }
    }

    private enum State {
        /// Accepted, not yet active.
        case idle
        /// A connect to `backend` (index `index` in the table's pool) is in flight.
        case connecting(backend: Backend, index: Int)
        /// Relaying through `glue` to `backend`, which has not answered yet: if it resets now, the
        /// client moves on with the bytes relayed so far, still held in `pending`.
        case trial(backend: Backend, index: Int, glue: (client: GlueHandler, backend: GlueHandler))
        /// The glue pair took over; this handler is leaving the pipeline.
        case relaying
        /// The client went away or was refused.
        case closed
    }

    private let dependencies: Dependencies
    private let outcome: ConnectionOutcome
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var table: RoutingTable?
    private var client = ClientAddress.unspecified
    private var excluded = BackendExclusions()
    private var attempts = 0
    /// Bytes from the client not yet handed to a backend that answered: waiting for the connection,
    /// or relayed during the trial and kept for a replay.
    private var pending = CircularBuffer<ByteBuffer>()
    private var pendingBytes = 0
    private var clientSentEOF = false
    private var readHeld = false

    init(dependencies: Dependencies, outcome: ConnectionOutcome) {
        self.dependencies = dependencies
        self.outcome = outcome
    }
}

extension BackendConnectHandler: ChannelDuplexHandler, RemovableChannelHandler {
    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.client = ClientAddress(context.channel.remoteAddress)
        if !self.dependencies.waitsForProxyHeader {
            self.start(context: context)
        }
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard case .idle = self.state else { return }
        // One table for every attempt of this client: the exclusions are indices into its pool.
        self.table = self.dependencies.router.table
        self.connectNext(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        self.pendingBytes += buffer.readableBytes
        guard case .trial = self.state else {
            self.pending.append(buffer)
            return
        }
        // A reference, not a copy: ByteBuffer is copy-on-write and nobody writes to it.
        self.pending.append(buffer)
        context.fireChannelRead(data)
        // Check the state again: relaying this read may have ended the trial (a write to a backend
        // that reset fails at once, and the client moves on before `fireChannelRead` returns).
        if case .trial = self.state, self.pendingBytes > self.dependencies.maxPendingBytes {
            // Too much to keep for a replay: the client stays with this backend.
            self.commit(context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        if case .trial = self.state {
            // The client's glue, in front of this handler, already applies back-pressure.
            context.read()
        } else if self.pendingBytes < self.dependencies.maxPendingBytes {
            context.read()
        } else {
            self.readHeld = true
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let header = event as? ProxyHeaderReceived {
            if let client = header.client { self.client = client }
            self.start(context: context)
            return
        }
        if let event = event as? ChannelEvent, case .inputClosed = event {
            self.clientSentEOF = true
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .connecting(let backend, _) = self.state {
            // The connect still in flight finds `.closed` and closes its channel.
            self.release(backend)
        }
        self.state = .closed
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if case .trial = self.state {
            // The glue records why the relay ended.
            context.fireErrorCaught(error)
        } else {
            context.close(promise: nil)
        }
    }
}

extension BackendConnectHandler {
    private func connectNext(context: ChannelHandlerContext) {
        guard let table = self.table else { preconditionFailure("connectNext before channelActive") }
        self.attempts += 1
        guard self.attempts <= self.dependencies.connectAttempts,
            let index = table.selector.pick(for: self.client, excluding: self.excluded)
        else {
            self.refuse(context: context)
            return
        }
        guard index >= 0, index < table.pool.count else {
            preconditionFailure("policy \(table.policy.name) picked index \(index) of a pool of \(table.pool.count)")
        }
        let backend = table.pool[index]
        table.picks.wrappingIncrement(ordering: .relaxed)
        backend.counters.connectionStarted()
        table.policy.connectionOpened(to: backend)
        self.state = .connecting(backend: backend, index: index)
        self.dependencies.connector.connect(to: backend.socketAddress, on: context.eventLoop)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    self.connected(to: channel, context: context)
                case .failure(let error):
                    self.connectFailed(error, context: context)
                }
            }
    }

    private func connected(to backendChannel: Channel, context: ChannelHandlerContext) {
        guard case .connecting(let backend, let index) = self.state else {
            // The client left while we were connecting.
            backendChannel.close(promise: nil)
            return
        }
        self.state = .relaying
        let glue = GlueHandler.matchedPair(outcome: self.outcome)
        glue.backend.watch(backend, health: self.dependencies.health)
        do {
            try backendChannel.pipeline.syncOperations.addHandler(glue.backend)
            try context.pipeline.syncOperations.addHandler(glue.client, position: .after(self))
        } catch {
            self.release(backend)
            backendChannel.close(promise: nil)
            context.close(promise: nil)
            return
        }
        let policy = self.table?.policy
        let accessLog = self.dependencies.accessLog
        // Bytes sent before the backend was up go out below, not through the glue: count them too.
        let earlyBytes = UInt64(self.pendingBytes)
        let outcome = self.outcome
        let client = self.client
        let retries = self.attempts - 1
        self.outcome.whenClosed = {
            backend.counters.connectionEnded()
            backend.counters.relayed(
                fromClient: earlyBytes + glue.client.bytesRead,
                fromBackend: glue.backend.bytesRead
            )
            policy?.connectionClosed(to: backend)
            accessLog?.record(
                AccessLog.Entry(
                    time: Date(),
                    client: client.description,
                    backend: backend.address.description,
                    bytesFromClient: earlyBytes + glue.client.bytesRead,
                    bytesFromBackend: glue.backend.bytesRead,
                    duration: .now() - outcome.accepted,
                    reason: (outcome.reason ?? .closedByL4LB).rawValue,
                    retries: retries
                )
            )
        }
        // The trial starts before the first write: a write to a backend that has already reset fails
        // at once, inside `flush`, and that failure must find the trial to move the client on.
        let canRetry =
            self.dependencies.retryOnReset
            && self.attempts < self.dependencies.connectAttempts
            && self.pendingBytes <= self.dependencies.maxPendingBytes
        if canRetry {
            self.state = .trial(backend: backend, index: index, glue: glue)
            glue.backend.offerRetry(to: self)
        }
        let attempt = self.attempts
        // Through the glue, which watches the writes for a reset while the trial is on.
        if let version = self.dependencies.sendProxyProtocol {
            glue.backend.writeToBackend(
                ProxyProtocolEncoder.header(version, client: self.client, local: context.channel.localAddress)
            )
        }
        for buffer in self.pending {
            glue.backend.writeToBackend(buffer)
        }
        backendChannel.flush()
        if self.clientSentEOF {
            // The glue never sees this EOF, so the close reason is recorded here.
            self.outcome.record(.clientClosed)
            backendChannel.close(mode: .output, promise: nil)
        }
        // If the flush failed and the client moved on (or was closed), this backend is history.
        guard self.attempts == attempt, self.context != nil, context.channel.isActive else { return }
        guard canRetry else {
            self.commit(context: context)
            return
        }
        if self.readHeld {
            self.readHeld = false
            context.channel.read()
        }
    }

    /// The client stays with its backend for good: forget the bytes kept for a replay and leave the
    /// pipeline to the glue.
    private func commit(context: ChannelHandlerContext) {
        if case .trial(_, _, let glue) = self.state {
            glue.backend.endTrial()
        }
        self.state = .relaying
        self.pending.removeAll()
        self.pendingBytes = 0
        let resumeReading = self.readHeld
        self.readHeld = false
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if resumeReading {
            // Goes through the client-side glue, which reads only while the backend is writable.
            context.channel.read()
        }
    }

    private func connectFailed(_ error: Error, context: ChannelHandlerContext) {
        guard case .connecting(let backend, let index) = self.state else { return }
        backend.counters.connectFailed()
        self.dependencies.health.connectFailed(backend, error: error)
        self.release(backend)
        self.excluded.insert(index)
        self.dependencies.connectFailureLog.warning(
            self.dependencies.logger,
            "connect to backend failed",
            metadata: ["backend": "\(backend)", "error": "\(Describe.error(error))", "attempt": "\(self.attempts)"]
        )
        self.connectNext(context: context)
    }

    private func refuse(context: ChannelHandlerContext) {
        self.state = .closed
        self.outcome.record(.noBackend)
        self.dependencies.accessLog?.record(
            AccessLog.Entry(
                time: Date(),
                client: self.client.description,
                backend: "-",
                bytesFromClient: UInt64(self.pendingBytes),
                bytesFromBackend: 0,
                duration: .now() - self.outcome.accepted,
                reason: ConnectionOutcome.Reason.noBackend.rawValue,
                // `attempts` counts the attempt that found nothing left to try.
                retries: max(0, self.attempts - 2)
            )
        )
        let reason =
            self.attempts > self.dependencies.connectAttempts ? "connect attempts exhausted" : "no backend available"
        self.dependencies.noBackendLog.warning(
            self.dependencies.logger,
            "closing client: \(reason)",
            metadata: ["client": "\(self.client)", "pool": "\(self.table?.pool.count ?? 0)"]
        )
        context.close(promise: nil)
    }

    private func release(_ backend: Backend) {
        backend.counters.connectionEnded()
        self.table?.policy.connectionClosed(to: backend)
    }
}

extension BackendConnectHandler: BackendTrial {
    func backendAnswered() {
        guard case .trial = self.state, let context = self.context else { return }
        self.commit(context: context)
    }

    func backendResetBeforeAnswering() -> Bool {
        guard case .trial(let backend, let index, let glue) = self.state, let context = self.context,
            context.channel.isActive
        else { return false }
        // Undo what `connected` set up for this backend; the next one sets it up afresh.
        self.outcome.whenClosed = nil
        self.release(backend)
        self.excluded.insert(index)
        self.state = .idle
        context.pipeline.syncOperations.removeHandler(glue.client, promise: nil)
        // The removed glue may have held back a read while the backend was not writable.
        self.readHeld = true
        self.dependencies.connectFailureLog.warning(
            self.dependencies.logger,
            "backend reset the connection before answering; trying another",
            metadata: ["backend": "\(backend)", "attempt": "\(self.attempts)"]
        )
        self.connectNext(context: context)
        return true
    }
}

@available(*, unavailable)
extension BackendConnectHandler: Sendable {}
