import NIOCore
import NIOPosix

/// One active check of a backend: a TCP connect and, when configured, a send/expect exchange, all
/// within the probe timeout. Runs on the health checker's event loop.
enum HealthProbe {
    struct Failed: Error, CustomStringConvertible {
        let description: String
    }

    static func run(
        to address: SocketAddress,
        on loop: any EventLoop,
        settings: HealthSettings
    ) -> EventLoopFuture<Void> {
        let connected = ClientBootstrap(group: loop)
            .connectTimeout(settings.probeTimeout)
            .connect(to: address)
        guard settings.probeSend != nil || settings.probeExpect != nil else {
            return connected.flatMap { channel in channel.close() }
        }
        let send = settings.probeSend
        let expect = settings.probeExpect
        let timeout = settings.probeTimeout
        return connected.flatMap { channel in
            let promise = channel.eventLoop.makePromise(of: Void.self)
            do {
                try channel.pipeline.syncOperations.addHandler(ExpectHandler(expect: expect, promise: promise))
            } catch {
                promise.fail(error)
            }
            if let send {
                channel.writeAndFlush(ByteBuffer(string: send), promise: nil)
            }
            if expect == nil {
                promise.succeed(())
            }
            let timer = channel.eventLoop.scheduleTask(in: timeout) {
                promise.fail(Failed(description: "no expected reply within \(timeout)"))
            }
            promise.futureResult.whenComplete { _ in
                timer.cancel()
                channel.close(promise: nil)
            }
            return promise.futureResult
        }
    }
}

/// Succeeds the probe when the bytes read so far contain `expect`; fails it at EOF, on an error, or
/// once 64 KiB came without it. Completes the promise once: what happens after (the close that
/// follows a success) changes nothing.
final class ExpectHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let expect: String?
    private let promise: EventLoopPromise<Void>
    private var received = ""
    private var done = false

    init(expect: String?, promise: EventLoopPromise<Void>) {
        self.expect = expect
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let expect = self.expect, !self.done else { return }
        var buffer = self.unwrapInboundIn(data)
        self.received += buffer.readString(length: buffer.readableBytes) ?? ""
        if self.received.contains(expect) {
            self.complete(.success(()))
        } else if self.received.utf8.count > 64 * 1024 {
            self.complete(.failure(HealthProbe.Failed(description: "reply did not contain the expected string")))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.complete(.failure(HealthProbe.Failed(description: "closed before the expected reply")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.complete(.failure(error))
    }

    private func complete(_ result: Result<Void, any Error>) {
        guard !self.done else { return }
        self.done = true
        self.promise.completeWith(result)
    }
}
