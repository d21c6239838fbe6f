import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import LBKit

/// The health probe's send/expect check, on NIO's EmbeddedChannel.
@Suite("Health probe expect handler")
struct ExpectHandlerTests {
    /// A channel with the handler, and the probe's result so far.
    func make(expect: String?) throws -> (EmbeddedChannel, EventLoopFuture<Void>) {
        let channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: Void.self)
        try channel.pipeline.syncOperations.addHandler(ExpectHandler(expect: expect, promise: promise))
        return (channel, promise.futureResult)
    }

    func outcome(_ future: EventLoopFuture<Void>) -> String {
        let outcome = NIOLockedValueBox("pending")
        future.whenComplete { result in
            switch result {
            case .success: outcome.withLockedValue { $0 = "ok" }
            case .failure(let error): outcome.withLockedValue { $0 = "\(error)" }
            }
        }
        return outcome.withLockedValue { $0 }
    }

    @Test("the expected text split across reads succeeds the probe; the close that follows changes nothing")
    func splitReply() throws {
        let (channel, result) = try self.make(expect: "+PONG")
        try channel.writeInbound(ByteBuffer(string: "+PO"))
        #expect(self.outcome(result) == "pending")
        try channel.writeInbound(ByteBuffer(string: "NG\r\n"))
        #expect(self.outcome(result) == "ok")
        _ = try channel.finish()
        #expect(self.outcome(result) == "ok")
    }

    @Test("a close before the expected text fails the probe with a reason")
    func closedEarly() throws {
        let (channel, result) = try self.make(expect: "ready")
        try channel.writeInbound(ByteBuffer(string: "busy\n"))
        _ = try channel.finish()
        #expect(self.outcome(result) == "closed before the expected reply")
    }

    @Test("64 KiB without the expected text fails the probe")
    func tooMuch() throws {
        let (channel, result) = try self.make(expect: "ready")
        for _ in 0..<65 {
            try channel.writeInbound(ByteBuffer(repeating: UInt8(ascii: "x"), count: 1024))
        }
        #expect(self.outcome(result) == "reply did not contain the expected string")
        _ = try channel.finish()
    }

    @Test("an error in the pipeline fails the probe with that error")
    func error() throws {
        let (channel, result) = try self.make(expect: "ready")
        channel.pipeline.fireErrorCaught(ChannelError.connectTimeout(.seconds(1)))
        #expect(self.outcome(result) == "\(ChannelError.connectTimeout(.seconds(1)))")
        _ = try channel.finish()
    }
}
