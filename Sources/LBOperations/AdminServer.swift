import Atomics
import Foundation
import LBKit
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The operator's window into a running l4lb, opened only with `--admin`: `GET /` (the live status
/// page, `StatusPage`, with its data at `/ui.json`), `GET /metrics` (Prometheus text format),
/// `GET /status` (JSON) and `GET /healthz`. Read-only: every other method is refused.
public final class AdminServer: Sendable {
    public struct Endpoints: Sendable {
        public var metrics: @Sendable () -> [UInt8]
        public var status: @Sendable () -> String
        /// nil when healthy; otherwise the reason, answered with 503.
        public var unhealthyReason: @Sendable () -> String?
        /// `/ui.json`, the status page's data; nil: no status page.
        public var statusPage: (@Sendable () -> String)?
        /// `/explain?client=IP[&port=P]`: what the policy would pick for that client, and why.
        public var explain: (@Sendable (ClientAddress) -> String)?

        public init(
            metrics: @escaping @Sendable () -> [UInt8],
            status: @escaping @Sendable () -> String,
            unhealthyReason: @escaping @Sendable () -> String?,
            statusPage: (@Sendable () -> String)? = nil,
            explain: (@Sendable (ClientAddress) -> String)? = nil
        ) {
            self.metrics = metrics
            self.status = status
            self.unhealthyReason = unhealthyReason
            self.statusPage = statusPage
            self.explain = explain
        }
    }

    private let channel: Channel

    private init(channel: Channel) {
        self.channel = channel
    }

    /// Admin connections open at once; more are closed at accept.
    static let maximumConnections = 64
    /// An admin connection with no byte either way for this long is closed.
    static let idleTimeout = TimeAmount.seconds(30)

    /// Binds `address` on `group`; throws a one-line error if it cannot.
    public static func start(
        at address: HostAndPort,
        group: EventLoopGroup,
        endpoints: Endpoints,
        logger: Logger
    ) async throws -> AdminServer {
        let channel: Channel
        let open = ManagedAtomic<Int>(0)
        let refusals = RateLimitedLog()
        do {
            let socketAddress = try BackendResolver.resolveListen(address)
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                // During a live upgrade the new process opens the endpoint while the old one drains.
                .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
                // Responses leave only as fast as the client reads them (see AdminHandler).
                .childChannelOption(
                    .writeBufferWaterMark,
                    value: .init(low: 32 * 1024, high: 256 * 1024)
                )
                .childChannelInitializer { child in
                    // A bounded number of admin connections: scrapers and browsers, not a crowd.
                    if open.wrappingIncrementThenLoad(ordering: .relaxed) > Self.maximumConnections {
                        open.wrappingDecrement(ordering: .relaxed)
                        refusals.warning(
                            logger,
                            "admin endpoint: refusing a connection, \(Self.maximumConnections) are open"
                        )
                        return child.close()
                    }
                    child.closeFuture.whenComplete { _ in open.wrappingDecrement(ordering: .relaxed) }
                    return child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(
                            IdleStateHandler(allTimeout: Self.idleTimeout)
                        )
                        try child.pipeline.syncOperations.configureHTTPServerPipeline()
                        try child.pipeline.syncOperations.addHandler(AdminHandler(endpoints: endpoints))
                    }
                }
                .bind(to: socketAddress).get()
        } catch {
            throw L4LBError(
                .bindFailed,
                "cannot open the admin endpoint on \(address): \((error as? L4LBError)?.message ?? "\(error)")"
            )
        }
        logger.info("admin endpoint listening", metadata: ["address": "\(Describe.address(channel.localAddress))"])
        return AdminServer(channel: channel)
    }

    public var localAddress: SocketAddress? { self.channel.localAddress }

    public func stop() async {
        try? await self.channel.close()
    }
}

/// Answers one request per call; GET (and HEAD) only.
///
/// Back-pressure: while the channel is not writable (responses pile up unread, as with a client
/// that pipelines requests and never reads), it answers nothing and reads nothing, so the next
/// request waits in the kernel instead of its response in l4lb's memory. Holding reads alone is not
/// enough: one read brings in a thousand small pipelined requests, which the HTTP pipeline handler
/// hands over one by one as each response is written, and a thousand /metrics responses made 15 MB.
final class AdminHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: AdminServer.Endpoints
    private var request: HTTPRequestHead?
    /// A complete request whose answer waits for the channel to be writable again.
    private var waiting: HTTPRequestHead?
    private var readHeld = false

    init(endpoints: AdminServer.Endpoints) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
        case .body:
            break
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            if context.channel.isWritable {
                self.respond(to: head, context: context)
            } else {
                self.waiting = head
            }
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let (status, contentType, body): (HTTPResponseStatus, String, [UInt8])
        if head.method != .GET && head.method != .HEAD {
            (status, contentType, body) = (.methodNotAllowed, "text/plain", Array("GET only\n".utf8))
        } else {
            switch path {
            case "/metrics":
                (status, contentType, body) = (
                    .ok, "text/plain; version=0.0.4; charset=utf-8", self.endpoints.metrics()
                )
            case "/status":
                (status, contentType, body) = (.ok, "application/json", Array((self.endpoints.status() + "\n").utf8))
            case "/" where self.endpoints.statusPage != nil:
                (status, contentType, body) = (.ok, "text/html; charset=utf-8", Array(StatusPage.html.utf8))
            case "/ui.json":
                if let page = self.endpoints.statusPage {
                    (status, contentType, body) = (.ok, "application/json", Array((page() + "\n").utf8))
                } else {
                    (status, contentType, body) = (.notFound, "text/plain", Array("no status page\n".utf8))
                }
            case "/explain" where self.endpoints.explain != nil:
                let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
                var parameters: [String: String] = [:]
                for pair in query.split(separator: "&") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    if parts.count == 2 { parameters[String(parts[0])] = String(parts[1]).removingPercentEncoding }
                }
                let port = parameters["port"].flatMap { UInt16($0) } ?? 0
                if let text = parameters["client"], let client = ClientAddress(text: text, port: port),
                    let explain = self.endpoints.explain
                {
                    (status, contentType, body) = (.ok, "application/json", Array((explain(client) + "\n").utf8))
                } else {
                    (status, contentType, body) = (
                        .badRequest, "text/plain", Array("usage: /explain?client=IP[&port=PORT]\n".utf8)
                    )
                }
            case "/healthz":
                if let reason = self.endpoints.unhealthyReason() {
                    (status, contentType, body) = (.serviceUnavailable, "text/plain", Array("\(reason)\n".utf8))
                } else {
                    (status, contentType, body) = (.ok, "text/plain", Array("ok\n".utf8))
                }
            default:
                (status, contentType, body) = (
                    .notFound, "text/plain", Array("not found: try /, /metrics, /status, /healthz\n".utf8)
                )
            }
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Cache-Control", value: "no-store")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil
        )
        if head.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            self.readHeld = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let head = self.waiting {
            self.waiting = nil
            self.respond(to: head, context: context)
        }
        if context.channel.isWritable, self.readHeld {
            self.readHeld = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}
