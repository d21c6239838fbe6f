import FuzzSupport
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import LBOperations

/// The admin endpoint's request parsing under fuzzing: mutated raw requests through the same
/// pipeline a connection gets (NIO's HTTP/1 decoder, then AdminHandler). Each gets an HTTP response
/// or a closed connection; nothing crashes, and no path but the endpoints answers 200.
@Suite("Admin requests under fuzzing")
struct AdminRequestFuzzTests {
    @Test("mutated request lines, query strings and headers")
    func requests() {
        let corpus = [
            "GET /metrics HTTP/1.1\r\nHost: l4lb\r\n\r\n",
            "GET /explain?client=198.51.100.7&port=443 HTTP/1.1\r\n\r\n",
            "GET /explain?client=2001:db8::1 HTTP/1.0\r\nConnection: close\r\n\r\n",
            "HEAD /status?pretty HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        ]
        let paths: Set<String> = ["/metrics", "/status", "/healthz", "/explain"]
        var answered = 0
        Mutator.fuzz(corpus, seed: 21, iterations: 4_000) { bytes in
            let channel = EmbeddedChannel()
            defer { _ = try? channel.finish() }
            do {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                try channel.pipeline.syncOperations.addHandler(
                    AdminHandler(
                        endpoints: AdminServer.Endpoints(
                            metrics: { Array("l4lb_up 1\n".utf8) },
                            status: { "{}" },
                            unhealthyReason: { nil },
                            explain: { client in "{\"client\":\"\(client)\"}" }
                        )
                    )
                )
                try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
            } catch {
                Issue.record("pipeline: \(error)")
                return
            }
            // A decoder error closes the connection (an HTTP 400 first): both are answers.
            _ = try? channel.writeInbound(ByteBuffer(bytes: bytes))
            var output = ""
            while let part = try? channel.readOutbound(as: ByteBuffer.self) {
                output += String(buffer: part)
            }
            guard !output.isEmpty else { return }
            answered += 1
            #expect(output.hasPrefix("HTTP/1."), "\(output.prefix(80))")
            if output.hasPrefix("HTTP/1.1 200") || output.hasPrefix("HTTP/1.0 200") {
                let target = String(decoding: bytes, as: UTF8.self).split(separator: " ").dropFirst().first ?? ""
                let path = String(target.prefix { $0 != "?" })
                #expect(paths.contains(path), "200 for \(target.prefix(80))")
            }
        }
        #expect(answered >= corpus.count)
    }
}
