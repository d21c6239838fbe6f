import Foundation
import LBKit
import Testing

@testable import l4lb

/// maglev end to end: two l4lb instances that know the same backends, listed in a different order,
/// send each client to the same backend, without talking to each other.
@Suite("Maglev across instances")
struct MaglevTests {
    @Test("two instances agree on every client's backend; a retired backend's clients move and no others")
    func instancesAgree() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b", "c", "d"])
            let flags = ["--policy", "maglev", "--accept-proxy-protocol"]
            let first = try await r.l4lb(backends: backends.map(\.spec), flags)
            let second = try await r.l4lb(backends: backends.reversed().map(\.spec), flags)
            let sources = (1...60).map { "198.51.100.\($0)" }
            var served: [String: String] = [:]
            for source in sources {
                let viaFirst = try BlockingClient.greeting(port: first.port, header: ProxyHeaders.v1(source))
                let viaSecond = try BlockingClient.greeting(port: second.port, header: ProxyHeaders.v1(source))
                #expect(viaFirst == viaSecond, "\(source): \(viaFirst) against \(viaSecond)")
                served[source] = viaFirst
            }
            #expect(Set(served.values).count == 4)

            // c dies: on its next connect it is retired, and only its clients move.
            let reservation = try await backends[2].kill()
            for source in sources {
                let now = try BlockingClient.greeting(port: first.port, header: ProxyHeaders.v1(source))
                if served[source] == "c" {
                    #expect(now != "c")
                } else {
                    #expect(now == served[source], "\(source) moved from \(served[source] ?? "-") to \(now)")
                }
            }
            withExtendedLifetime(reservation) {}
        }
    }

    @Test("/explain names the backend a client goes to, and why; a bad request is refused")
    func explainEndpoint() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b", "c"])
            let proxy = try await r.l4lb(
                backends: backends.map(\.spec),
                ["--policy", "maglev", "--accept-proxy-protocol", "--admin", "127.0.0.1:0"]
            )
            let admin = try #require(proxy.adminAddress?.port)
            for source in ["198.51.100.7", "203.0.113.9", "2001:db8::5"] {
                let (status, body) = try httpGet(port: admin, path: "/explain?client=\(source)")
                #expect(status == 200)
                let answer = try JSONDecoder().decode(ExplainAnswer.self, from: Data(body.utf8))
                #expect(answer.policy == "maglev")
                #expect(answer.chain.hasPrefix("hash of "))
                // The explained backend is the one that serves that client.
                let served = try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1(source))
                let port = backends.first { $0.spec.address.description == answer.backend }?.port
                #expect(port == backends.first { $0.name == served }?.port, "\(answer) but served by \(served)")
            }
            #expect(try httpGet(port: admin, path: "/explain?client=nonsense").status == 400)
        }
    }
}
