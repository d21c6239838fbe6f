import LBKit
import NIOCore
import Testing

@Suite("Parsing operator input")
struct ParsingTests {
    @Test(
        "host:port and [ipv6]:port",
        arguments: [
            ("127.0.0.1:80", "127.0.0.1", 80),
            ("[::1]:8080", "::1", 8080),
            ("backend.internal:65535", "backend.internal", 65_535),
            ("  10.0.0.1:1 ", "10.0.0.1", 1),
        ]
    )
    func validAddresses(text: String, host: String, port: Int) throws {
        let address = try HostAndPort(parsing: text)
        #expect(address.host == host)
        #expect(address.port == port)
    }

    @Test(
        "bad addresses are refused with a reason",
        arguments: [
            ("", "empty address"),
            ("127.0.0.1", "expected host:port"),
            ("127.0.0.1:0", "not in 1-65535"),
            ("127.0.0.1:65536", "not in 1-65535"),
            ("127.0.0.1:http", "not in 1-65535"),
            ("::1:80", "brackets"),
            ("[::1:80", "missing ']'"),
            ("[::1]80", "expected ':port'"),
            (":80", "the host is empty"),
        ]
    )
    func invalidAddresses(text: String, reason: String) {
        #expect {
            try HostAndPort(parsing: text)
        } throws: { error in
            (error as? L4LBError)?.code == .invalidAddress && "\(error)".contains(reason)
        }
    }

    @Test("listeners may ask for port 0")
    func listenPortZero() throws {
        #expect(try HostAndPort(parsing: "127.0.0.1:0", allowPortZero: true).port == 0)
    }

    @Test("canonical spelling brackets IPv6")
    func canonicalSpelling() throws {
        #expect(try HostAndPort(parsing: "[::1]:80").description == "[::1]:80")
        #expect(try HostAndPort(parsing: "10.1.2.3:80").description == "10.1.2.3:80")
    }

    @Test("backend specs with attributes")
    func backendSpecs() throws {
        let spec = try BackendSpec(parsing: "127.0.0.1:9002,weight=2,region=EU")
        #expect(spec.address == HostAndPort(host: "127.0.0.1", port: 9002))
        #expect(spec.weight == 2)
        #expect(spec.region == "EU")
        #expect(spec.description == "127.0.0.1:9002,weight=2,region=EU")
        #expect(try BackendSpec(parsing: "[::1]:9").weight == 1)
    }

    @Test(
        "bad backend attributes are refused",
        arguments: [
            "127.0.0.1:1,weight=0", "127.0.0.1:1,weight=257", "127.0.0.1:1,weight=x", "127.0.0.1:1,region=",
            "127.0.0.1:1,speed=3", "127.0.0.1:1,",
        ]
    )
    func badBackendSpecs(text: String) {
        #expect(throws: L4LBError.self) { try BackendSpec(parsing: text) }
    }

    @Test("policy specs: a name, optionally a JSON object")
    func policySpecs() throws {
        #expect(try PolicySpec(parsing: "round-robin") == PolicySpec(name: "round-robin"))
        let geo = try PolicySpec(parsing: #"  geo {"database": "/x.mmdb"} "#)
        #expect(geo.name == "geo")
        #expect(geo.configuration == #"{"database": "/x.mmdb"}"#)
        #expect(try geo.configurationObject()["database"] as? String == "/x.mmdb")
        #expect(try PolicySpec(parsing: #"geo{"a":1}"#).name == "geo")
    }

    @Test(
        "bad policy specs are refused",
        arguments: [
            "", "   ", "geo [1,2]", "geo {not json", "geo 42", "bad/name", "geo {\"a\":1} trailing",
        ]
    )
    func badPolicySpecs(text: String) {
        #expect(throws: L4LBError.self) { try PolicySpec(parsing: text) }
    }

    @Test("oversized policy specs are refused")
    func oversizedPolicySpec() {
        let text = "geo {\"x\":\"" + String(repeating: "a", count: PolicySpec.maximumLength) + "\"}"
        #expect(throws: L4LBError.self) { try PolicySpec(parsing: text) }
    }

    @Test(
        "durations",
        arguments: [
            ("3s", Int64(3_000_000_000)), ("250ms", 250_000_000), ("1.5s", 1_500_000_000), ("2m", 120_000_000_000),
            ("1h", 3_600_000_000_000), ("10", 10_000_000_000), ("0", 0), ("300us", 300_000),
        ]
    )
    func durations(text: String, nanoseconds: Int64) throws {
        #expect(try DurationParser.parse(text, flag: "--x").nanoseconds == nanoseconds)
    }

    @Test("bad durations are refused", arguments: ["-1s", "soon", "", "1d", "s", "nan", "1e30h"])
    func badDurations(text: String) {
        #expect(throws: L4LBError.self) { try DurationParser.parse(text, flag: "--x") }
    }
}
