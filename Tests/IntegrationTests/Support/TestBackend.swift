import Atomics
import LBKit
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A real TCP server on 127.0.0.1 that plays a backend in the tests.
final class TestBackend: Sendable {
    enum Behavior: Sendable {
        /// Sends "NAME\n" on connect, then echoes what it reads; closes after the client's EOF.
        case greet(String)
        /// Echoes what it reads; closes after the client's EOF.
        case echo
        /// Reads until the client's EOF, then answers "NAME received N bytes\n" and closes: works only
        /// if a client's half-close reaches it and its answer reaches the client.
        case answerAfterEOF(String)
        /// Accepts and never reads until `resumeReading()`.
        case stalled
        /// Accepts and resets the connection at once, before sending a byte (SO_LINGER 0).
        case resetOnAccept
        /// Reads until it has received this many bytes, then resets the connection without having
        /// sent a byte: a server that crashes on a request it took in.
        case resetAfterReading(Int)
        /// Reads a PROXY protocol header and answers what it said: the raw v1 line, or for v2
        /// "v2 <client address:port>", then closes.
        case reportProxyHeader
        /// On connect sends this many bytes, then resets the connection: a server that dies
        /// halfway through a reply.
        case sendThenReset(Int)
        /// On connect sends "NAME\n" and shuts down its write side, then reads (counting) until the
        /// client's EOF: a server that has said all it will say and still listens.
        case greetAndHalfClose(String)
    }

    let name: String
    let port: Int
    private let channel: Channel
    private let accepted = ManagedAtomic<Int>(0)
    let bytesReceived = ManagedAtomic<Int>(0)
    let readingAllowed = ManagedAtomic<Bool>(true)
    private let children = ChildChannels()

    /// Connections accepted so far.
    var acceptedCount: Int { self.accepted.load(ordering: .relaxed) }

    private init(name: String, port: Int, channel: Channel) {
        self.name = name
        self.port = port
        self.channel = channel
    }

    /// - Parameter port: 0 for a port of the kernel's choice; a fixed port to restart a backend.
    static func start(
        _ behavior: Behavior,
        group: EventLoopGroup,
        host: String = "127.0.0.1",
        port: Int = 0
    ) async throws -> TestBackend {
        let state = SharedState()
        let name: String
        switch behavior {
        case .greet(let n), .answerAfterEOF(let n), .greetAndHalfClose(let n): name = n
        case .echo: name = "echo"
        case .stalled: name = "stalled"
        case .reportProxyHeader: name = "proxy-report"
        case .resetOnAccept, .resetAfterReading, .sendThenReset: name = "reset"
        }
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Shares the port with a PortReservation, so that kill and restart hand it over with no
            // gap another socket could fall into.
            .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.autoRead, value: !(behavior.isStalled))
            .childChannelInitializer { child in
                state.onAccept(child)
                return child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(BackendHandler(behavior: behavior, state: state))
                }
            }
            .bind(host: host, port: port).get()
        let backend = TestBackend(name: name, port: channel.localAddress!.port!, channel: channel)
        state.backend.withLockedValue { $0 = backend }
        return backend
    }

    /// Lets a `.stalled` backend read everything sent so far and from now on.
    func resumeReading() {
        for child in self.children.all() {
            child.setOption(.autoRead, value: true).whenSuccess { child.read() }
        }
    }

    /// Stops listening and closes every connection it accepted.
    func stop() async {
        try? await self.channel.close()
        for child in self.children.all() {
            try? await child.close()
        }
    }

    /// Dies like a crashed server: stops, and its port then refuses connections, held so that no
    /// other test's server can take it until the returned reservation is released.
    func kill() async throws -> PortReservation {
        let reservation = try PortReservation(port: self.port)
        await self.stop()
        return reservation
    }

    fileprivate func recordAccept(_ child: Channel) {
        self.accepted.wrappingIncrement(ordering: .relaxed)
        self.children.add(child)
    }
}

extension TestBackend.Behavior {
    fileprivate var isStalled: Bool {
        if case .stalled = self { return true }
        return false
    }
}

private final class ChildChannels: Sendable {
    private let channels = NIOLockedValueBox<[Channel]>([])
    func add(_ channel: Channel) { self.channels.withLockedValue { $0.append(channel) } }
    func all() -> [Channel] { self.channels.withLockedValue { $0 } }
}

private final class SharedState: Sendable {
    let backend = NIOLockedValueBox<TestBackend?>(nil)
    func onAccept(_ child: Channel) { self.backend.withLockedValue { $0?.recordAccept(child) } }
    func received(_ count: Int) {
        self.backend.withLockedValue { $0?.bytesReceived.wrappingIncrement(by: count, ordering: .relaxed) }
    }
}

private final class BackendHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let behavior: TestBackend.Behavior
    private let state: SharedState
    private var received = 0
    private var header = ByteBuffer()

    init(behavior: TestBackend.Behavior, state: SharedState) {
        self.behavior = behavior
        self.state = state
    }

    func channelActive(context: ChannelHandlerContext) {
        if case .resetOnAccept = self.behavior {
            Self.reset(context: context)
            return
        }
        if case .greet(let name) = self.behavior {
            context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: "\(name)\n")), promise: nil)
        }
        if case .greetAndHalfClose(let name) = self.behavior {
            context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: "\(name)\n")))
                .assumeIsolated().whenComplete { _ in context.close(mode: .output, promise: nil) }
        }
        if case .sendThenReset(let count) = self.behavior {
            let bytes = ByteBuffer(repeating: 0x5A, count: count)
            context.writeAndFlush(self.wrapOutboundOut(bytes)).assumeIsolated().whenComplete { _ in
                Self.reset(context: context)
            }
            return
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        self.received += buffer.readableBytes
        self.state.received(buffer.readableBytes)
        switch self.behavior {
        case .greet, .echo:
            context.write(self.wrapOutboundOut(buffer), promise: nil)
        case .answerAfterEOF, .stalled, .resetOnAccept, .sendThenReset, .greetAndHalfClose:
            break
        case .resetAfterReading(let count):
            if self.received >= count { Self.reset(context: context) }
        case .reportProxyHeader:
            self.header.writeImmutableBuffer(buffer)
            let view = self.header.readableBytesView
            switch ProxyProtocolHeader.parse(view) {
            case .needMoreBytes:
                return
            case .invalid(let reason):
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: "invalid \(reason)\n")), promise: nil)
            case .header(let client, let length):
                let answer: String
                if view.first == UInt8(ascii: "P") {
                    answer = String(decoding: view.prefix(length - 2), as: UTF8.self)
                } else {
                    answer = "v2 \(client.map(\.description) ?? "local")"
                }
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: answer + "\n")), promise: nil)
            }
            self.header.clear()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, case .inputClosed = event else { return }
        switch self.behavior {
        case .answerAfterEOF(let name):
            let answer = ByteBuffer(string: "\(name) received \(self.received) bytes\n")
            context.writeAndFlush(self.wrapOutboundOut(answer)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        default:
            context.writeAndFlush(self.wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Closes with SO_LINGER 0, so the peer gets a reset instead of a FIN.
    private static func reset(context: ChannelHandlerContext) {
        guard let provider = context.channel as? SocketOptionProvider else {
            context.close(promise: nil)
            return
        }
        provider.setSoLinger(linger(l_onoff: 1, l_linger: 0))
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
