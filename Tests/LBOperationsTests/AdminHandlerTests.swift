import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import LBOperations

/// The admin endpoint's request handler on NIO's EmbeddedChannel: requests in as HTTP parts,
/// responses out, without a socket.
@Suite("Admin handler")
struct AdminHandlerTests {
    /// Counts the read requests that reach the channel: what the handler lets through.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        let reads = NIOLockedValueBox(0)
        func read(context: ChannelHandlerContext) {
            self.reads.withLockedValue { $0 += 1 }
            context.read()
        }
    }

    struct Response {
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
        var body: String?
    }

    static let unhealthy = NIOLockedValueBox<String?>(nil)

    func channel() throws -> (EmbeddedChannel, ReadCounter) {
        let counter = ReadCounter()
        let endpoints = AdminServer.Endpoints(
            metrics: { Array("l4lb_up 1\n".utf8) },
            status: { #"{"instance":"t"}"# },
            unhealthyReason: { Self.unhealthy.withLockedValue { $0 } }
        )
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(AdminHandler(endpoints: endpoints))
        // Active, as an accepted connection is, so that a close is seen.
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return (channel, counter)
    }

    func request(
        _ channel: EmbeddedChannel,
        _ uri: String,
        method: HTTPMethod = .GET,
        headers: HTTPHeaders = [:]
    ) throws -> Response? {
        try channel.writeInbound(
            HTTPServerRequestPart.head(.init(version: .http1_1, method: method, uri: uri, headers: headers))
        )
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        guard case .head(let head) = try channel.readOutbound(as: HTTPServerResponsePart.self) else { return nil }
        var response = Response(status: head.status, headers: head.headers)
        while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) {
            switch part {
            case .body(.byteBuffer(var buffer)):
                response.body = (response.body ?? "") + (buffer.readString(length: buffer.readableBytes) ?? "")
            case .end: return response
            default: break
            }
        }
        return response
    }

    @Test("each endpoint answers with its content type and length; an unknown path is 404")
    func endpoints() throws {
        let (channel, _) = try self.channel()
        let metrics = try #require(try self.request(channel, "/metrics"))
        #expect(metrics.status == .ok)
        #expect(metrics.headers["Content-Type"] == ["text/plain; version=0.0.4; charset=utf-8"])
        #expect(metrics.body == "l4lb_up 1\n")
        #expect(metrics.headers["Content-Length"] == ["10"])
        let status = try #require(try self.request(channel, "/status?pretty"))
        #expect(status.headers["Content-Type"] == ["application/json"])
        #expect(status.body == "{\"instance\":\"t\"}\n")
        #expect(try self.request(channel, "/nowhere")?.status == .notFound)
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    @Test("/healthz says why it is unhealthy, with 503")
    func health() throws {
        let (channel, _) = try self.channel()
        Self.unhealthy.withLockedValue { $0 = nil }
        #expect(try self.request(channel, "/healthz")?.body == "ok\n")
        Self.unhealthy.withLockedValue { $0 = "every backend is retired" }
        let sick = try #require(try self.request(channel, "/healthz"))
        #expect(sick.status == .serviceUnavailable)
        #expect(sick.body == "every backend is retired\n")
        Self.unhealthy.withLockedValue { $0 = nil }
        _ = try channel.finish()
    }

    @Test("read-only: other methods get 405; HEAD gets the headers and no body")
    func methods() throws {
        let (channel, _) = try self.channel()
        #expect(try self.request(channel, "/metrics", method: .POST)?.status == .methodNotAllowed)
        #expect(try self.request(channel, "/status", method: .DELETE)?.status == .methodNotAllowed)
        let head = try #require(try self.request(channel, "/metrics", method: .HEAD))
        #expect(head.status == .ok && head.body == nil && head.headers["Content-Length"] == ["10"])
        _ = try channel.finish()
    }

    @Test("Connection: close closes the channel after the response")
    func connectionClose() throws {
        let (channel, _) = try self.channel()
        let response = try #require(try self.request(channel, "/metrics", headers: ["Connection": "close"]))
        #expect(response.headers["Connection"] == ["close"])
        #expect(!channel.isActive)
    }

    @Test("while responses wait unread (not writable) no further request is read; reading resumes when they drain")
    func backPressure() throws {
        let (channel, counter) = try self.channel()
        channel.read()
        #expect(counter.reads.withLockedValue { $0 } == 1)
        channel.isWritable = false
        channel.read()
        channel.read()
        #expect(counter.reads.withLockedValue { $0 } == 1)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(counter.reads.withLockedValue { $0 } == 2)
        _ = try channel.finish()
    }
}
