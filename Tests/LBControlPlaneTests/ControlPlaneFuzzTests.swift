import FuzzSupport
import LBControlPlane
import LBKit
import Testing

/// The control plane's parsers, fed mutated inputs (see LBKitTests' ParserFuzzTests): each answers
/// a value or a one-line L4LBError, never a crash or a hang.
@Suite("Control-plane parsers under fuzzing")
struct ControlPlaneFuzzTests {
    static let iterations = 20_000

    @Test("control messages on every channel, and serverPool documents")
    func controlMessages() {
        let corpus = [
            "10.0.0.1:80", "[2001:db8::1]:443,weight=3,region=eu", #"{"address":"10.0.0.2:80","weight":2}"#,
            "geo {\"database\": \"/x.mmdb\"}", "least-connections",
            #"[{"address":"10.0.0.1:80","weight":1,"region":"us"},"10.0.0.3:8080"]"#,
        ]
        Mutator.fuzz(corpus, seed: 3, iterations: Self.iterations) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            for channel in ControlChannel.allCases {
                _ = try? ControlMessage(channel: channel, payload: text)
            }
            _ = try? PoolDocument.decode(text)
        }
    }

    @Test("what l4lb writes to serverPool it reads back")
    func poolRoundTrip() throws {
        var mutator = Mutator(seed: 5)
        for _ in 0..<2_000 {
            let specs = (0..<mutator.below(20)).map { index in
                BackendSpec(
                    address: HostAndPort(
                        host: "10.\(mutator.below(256)).\(mutator.below(256)).\(index)",
                        port: 1 + mutator.below(65_535)
                    ),
                    weight: 1 + mutator.below(256),
                    region: mutator.below(2) == 0 ? nil : "r\\\"\(mutator.below(100))"
                )
            }
            #expect(try PoolDocument.decode(PoolDocument.encode(specs)) == specs)

        }
    }
}
