import Foundation
import LBControlPlane
import LBKit
import Logging
import NIOConcurrencyHelpers
import Policies
import Testing

@testable import l4lb

/// Geo routing end to end: the geo plugin (.so built by this package, loaded with dlopen), real
/// MaxMind test databases, clients presented through PROXY v1 and v2 headers.
@Suite("Geo routing")
struct GeoRoutingTests {
    /// Backends named after where they serve; "us-west" is a configured region, "backup" the fallback.
    static let regions: [(name: String, region: String)] = [
        ("gb", "GB"), ("eu", "EU"), ("us-west", "us-west"), ("as", "AS"), ("backup", "backup"),
    ]

    static func geoSpec(database: String) throws -> PolicySpec {
        try PolicySpec(
            parsing:
                #"geo {"database": "\#(database)", "regions": {"us-west": ["US", "CA"]}, "fallback": ["backup"], "reload_check_seconds": 0.1}"#
        )
    }

    /// One greeting backend per region of `regions`.
    private static func regionBackends(_ r: TestResources) async throws -> [BackendSpec] {
        var specs: [BackendSpec] = []
        for (name, region) in Self.regions {
            let backend = try await r.backend(.greet(name))
            specs.append(BackendSpec(address: HostAndPort(host: "127.0.0.1", port: backend.port), region: region))
        }
        return specs
    }

    private func startGeo(_ r: TestResources, database: String) async throws -> Application {
        try await r.l4lb(
            backends: try await Self.regionBackends(r),
            ["--policy", try Self.geoSpec(database: database).description, "--accept-proxy-protocol"]
        )
    }

    @Test(
        "clients from several countries reach their region's backend, through PROXY v1 and v2",
        arguments: [
            ("81.2.69.160", "gb"),  // GB: country match
            ("::ffff:81.2.69.160", "gb"),  // IPv4-mapped IPv6, looked up as IPv4
            ("89.160.20.112", "eu"),  // SE: no SE backend, continent EU
            ("216.160.83.56", "us-west"),  // US: the configured region us-west lists US
            ("2001:218::1", "as"),  // JP over IPv6: continent AS
            ("175.16.199.1", "as"),  // CN (City database): continent AS
            ("8.8.8.8", "backup"),  // not in the database: the fallback region
        ]
    )
    func routesByRegion(client: String, expected: String) async throws {
        try await withTestResources { r in
            let proxy = try await self.startGeo(r, database: PluginFixtures.database("GeoIP2-City-Test.mmdb"))
            #expect(try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1(client)) == expected)
            #expect(try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v2(client)) == expected)
        }
    }

    @Test("/explain with geo: the country, continent and region counts, and the backend that really serves the client")
    func explainsItsRoute() async throws {
        try await withTestResources { r in
            let backends = try await Self.regionBackends(r)
            let proxy = try await r.l4lb(
                backends: backends,
                [
                    "--policy",
                    try Self.geoSpec(database: PluginFixtures.database("GeoIP2-City-Test.mmdb")).description,
                    "--accept-proxy-protocol", "--admin", "127.0.0.1:0",
                ]
            )
            let admin = try #require(proxy.adminAddress?.port)
            let cases: [(client: String, name: String, steps: [String])] = [
                ("81.2.69.160", "gb", ["country GB", "continent EU", "region GB: 1 healthy of 1"]),
                ("216.160.83.56", "us-west", ["country US", "continent NA", "region us-west: 1 healthy of 1"]),
                (
                    "89.160.20.112", "eu",
                    ["country SE", "continent EU", "no backend serves country SE", "region EU: 1 healthy of 1"]
                ),
                ("8.8.8.8", "backup", ["8.8.8.8 is not in GeoIP2-City", "fallback region backup"]),
            ]
            for (client, name, steps) in cases {
                let (status, body) = try httpGet(port: admin, path: "/explain?client=\(client)")
                #expect(status == 200)
                let answer = try JSONDecoder().decode(ExplainAnswer.self, from: Data(body.utf8))
                #expect(answer.policy == "geo")
                #expect(Array(answer.steps.prefix(steps.count)) == steps, "\(answer.steps)")
                let chosen = backends[Self.regions.firstIndex { $0.name == name }!].address.description
                #expect(answer.backend == chosen)
                #expect(
                    answer.steps.last?.hasPrefix("least loaded: \(chosen) (0 open, weight 1") == true,
                    "\(answer.steps)"
                )
                #expect(try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1(client)) == name)
            }
        }
    }

    @Test("a geo explanation does not move the rotation among equally loaded backends; a pick does")
    func explainingChangesNothing() throws {
        let router = Router(
            policy: try PluginFixtures.registry().makePolicy(
                try Self.geoSpec(database: PluginFixtures.database("GeoIP2-City-Test.mmdb"))
            )
        )
        try router.setPool(
            (1...3).map { BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 9000 + $0), region: "GB") }
        )
        let client = try #require(ClientAddress(text: "81.2.69.160"))
        let first = ExplainAnswer(router: router, client: client).backend
        for _ in 0..<5 { #expect(ExplainAnswer(router: router, client: client).backend == first) }
        let picked = try #require(router.table.selector.pick(for: client, excluding: .none))
        #expect(router.pool[picked].address.description == first)
        #expect(ExplainAnswer(router: router, client: client).backend != first, "the pick moved the rotation on")
    }

    @Test(
        "a region of more than 16 backends: two drawn at random, the less loaded wins; never the most loaded or an excluded one"
    )
    func largeRegionDrawsTwo() throws {
        let router = Router(
            policy: try PluginFixtures.registry().makePolicy(
                try Self.geoSpec(database: PluginFixtures.database("GeoIP2-City-Test.mmdb"))
            )
        )
        // 40 backends in GB, then 4 in us-west.
        try router.setPool(
            (0..<44).map {
                BackendSpec(
                    address: HostAndPort(host: "127.0.0.1", port: 9000 + $0),
                    region: $0 < 40 ? "GB" : "us-west"
                )
            }
        )
        let client = try #require(ClientAddress(text: "81.2.69.160"))
        // The explanation names the two-draw rule and the backend the next pick takes.
        let explained = ExplainAnswer(router: router, client: client)
        #expect(explained.steps.last?.hasPrefix("less loaded of two drawn at random from 40: ") == true)
        let first = try #require(router.table.selector.pick(for: client, excluding: .none))
        #expect(router.pool[first].address.description == explained.backend)

        for _ in 0..<100 { router.pool[0].counters.connectionStarted() }
        var excluded = BackendExclusions()
        for index in 1..<10 { excluded.insert(index) }
        var picked = Set<Int>()
        for _ in 0..<400 {
            let index = try #require(router.table.selector.pick(for: client, excluding: excluded))
            #expect((10..<40).contains(index), "picked \(index): outside GB, excluded, or the most loaded")
            picked.insert(index)
        }
        // The draws spread over the region's 30 eligible backends.
        #expect(picked.count >= 25, "only \(picked.count) of 30 backends picked")
    }

    @Test("among a region's backends the least loaded wins; a retired one is skipped; no match left means any backend")
    func leastLoadedWithinRegion() async throws {
        try await withTestResources { r in
            let first = try await r.backend(.greet("eu-1"))
            let second = try await r.backend(.greet("eu-2"))
            let other = try await r.backend(.greet("na"))
            let specs = [
                BackendSpec(address: HostAndPort(host: "127.0.0.1", port: first.port), region: "EU"),
                BackendSpec(address: HostAndPort(host: "127.0.0.1", port: second.port), region: "EU"),
                BackendSpec(address: HostAndPort(host: "127.0.0.1", port: other.port), region: "NA"),
            ]
            let geo = #"geo {"database": "\#(PluginFixtures.database("GeoLite2-Country-Test.mmdb"))"}"#
            let proxy = try await r.l4lb(backends: specs, ["--policy", geo, "--accept-proxy-protocol"])
            let held = try BlockingClient(port: proxy.port)
            try held.send(ProxyHeaders.v1("81.2.69.160"))
            let heldOn = try #require(try held.readLine())
            let next = try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1("81.2.69.160"))
            #expect(Set([heldOn, next]) == ["eu-1", "eu-2"])
            // Unknown address, no fallback configured: any healthy backend serves.
            #expect(
                ["eu-1", "eu-2", "na"].contains(
                    try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1("8.8.8.8"))
                )
            )
            // With the EU backends gone (dead and retired), a GB client is still served.
            let reservations = [try await first.kill(), try await second.kill()]
            for _ in 0..<3 {
                #expect(try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1("81.2.69.160")) == "na")
            }
            withExtendedLifetime(reservations) {}
        }
    }

    @Test(
        "a broken or missing database is refused with a clear error, never a crash",
        arguments: [
            ("GeoIP2-City-Test-Broken-Double-Format.mmdb", "is corrupt"),
            ("GeoIP2-City-Test-Invalid-Node-Count.mmdb", "invalid metadata"),
            ("libmaxminddb-corrupt-search-tree.mmdb", "search tree"),
            ("libmaxminddb-offset-integer-overflow.mmdb", "bad data"),
            ("libmaxminddb-deep-nesting.mmdb", "is corrupt"),
            ("no-such-file.mmdb", "cannot open"),
            ("README.md", "cannot open"),
        ]
    )
    func brokenDatabases(file: String, reason: String) throws {
        let registry = PluginFixtures.registry()
        #expect {
            try registry.makePolicy(
                PolicySpec(name: "geo", configuration: #"{"database": "\#(PluginFixtures.database(file))"}"#)
            )
        } throws: { error in
            let message = "\(error)"
            return message.contains(reason) && message.contains(file) && !message.contains("\n")
        }
    }

    @Test(
        "bad geo configurations are refused",
        arguments: [
            "{}", #"{"database": 5}"#, #"{"database": "x", "fallback": "backup"}"#, #"{"database": "x", "color": 1}"#,
        ]
    )
    func badConfigurations(configuration: String) {
        #expect(throws: L4LBError.self) {
            try PluginFixtures.registry().makePolicy(PolicySpec(name: "geo", configuration: configuration))
        }
    }

    @Test("the database is re-read when it changes on disk; a broken new file is refused and the old one stays")
    func reload() async throws {
        try await withTestResources { r in
            let directory = try PluginFixtures.makeDirectory()
            r.onStop { try? FileManager.default.removeItem(atPath: directory) }
            let live = "\(directory)/geo.mmdb"
            try FileManager.default.copyItem(atPath: PluginFixtures.database("GeoIP2-City-Test.mmdb"), toPath: live)
            // The binary itself, so that the plugin's refusal reaches this test's log and no other.
            let backends = try await Self.regionBackends(r).flatMap { ["--backend", $0.description] }
            let process = try L4LBProcess(
                arguments: [
                    "--listen", "127.0.0.1:0", "--accept-proxy-protocol",
                    "--policy", try Self.geoSpec(database: live).description,
                ] + backends
            )
            r.onStop { process.kill() }
            let port = try #require(await process.listeningPort(), "got: \(process.text)")
            // 175.16.199.1 is CN/AS in the City database and unknown in the Country one.
            #expect(try BlockingClient.greeting(port: port, header: ProxyHeaders.v1("175.16.199.1")) == "as")

            try Self.replace(live, with: PluginFixtures.database("GeoLite2-Country-Test.mmdb"), in: directory)
            #expect(
                await eventually {
                    (try? BlockingClient.greeting(port: port, header: ProxyHeaders.v1("175.16.199.1"))) == "backup"
                }
            )

            try Self.replace(
                live,
                with: PluginFixtures.database("libmaxminddb-corrupt-search-tree.mmdb"),
                in: directory
            )
            #expect(
                await eventually { process.text.contains("refused the new version of \(live)") },
                "got: \(process.text)"
            )
            #expect(try BlockingClient.greeting(port: port, header: ProxyHeaders.v1("175.16.199.1")) == "backup")
            #expect(try BlockingClient.greeting(port: port, header: ProxyHeaders.v1("81.2.69.160")) == "gb")
        }
    }

    /// Atomic swap, as database updaters do it: write beside, then rename over.
    private static func replace(_ path: String, with source: String, in directory: String) throws {
        let staging = "\(directory)/staging.mmdb"
        try? FileManager.default.removeItem(atPath: staging)
        try FileManager.default.copyItem(atPath: source, toPath: staging)
        guard rename(staging, path) == 0 else { throw TestFailure("rename failed") }
    }

    @Test("PROXY headers: consumed, not forwarded; a client without a valid header is closed")
    func proxyHeaderHandling() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.answerAfterEOF("a"))
            let proxy = try await r.l4lb(
                backends: [backend.spec],
                ["--accept-proxy-protocol", "--proxy-protocol-timeout", "300ms"]
            )

            let client = try BlockingClient(port: proxy.port)
            try client.send(ProxyHeaders.v2("81.2.69.160") + Array("12345".utf8))
            client.shutdownWrite()
            #expect(String(decoding: try client.readToEnd(), as: UTF8.self) == "a received 5 bytes\n")

            let garbage = try BlockingClient(port: proxy.port)
            try garbage.send("GET / HTTP/1.0\r\n\r\n")
            #expect(garbage.waitForClose(timeoutSeconds: 5))

            let silent = try BlockingClient(port: proxy.port)
            #expect(silent.waitForClose(timeoutSeconds: 5))
            #expect(backend.acceptedCount == 1)
        }
    }

    @Test("live setPolicy from round-robin to geo and back under traffic: no connection dropped")
    func liveSwitch() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            var specs: [BackendSpec] = []
            for (name, region) in Self.regions {
                let backend = try await r.backend(.greet(name))
                specs.append(BackendSpec(address: HostAndPort(host: "127.0.0.1", port: backend.port), region: region))
            }
            let proxy = try await r.l4lb(backends: specs, redis: redis, ["--accept-proxy-protocol"])
            let controlPlane = try #require(proxy.controlPlane)
            let held = try BlockingClient(port: proxy.port)
            try held.send(ProxyHeaders.v1("81.2.69.160"))
            _ = try held.readLine()

            // Traffic in the background the whole time; every client must be served.
            let failures = NIOLockedValueBox<[String]>([])
            let served = NIOLockedValueBox(0)
            let stop = NIOLockedValueBox(false)
            let finished = NIOLockedValueBox(false)
            let traffic = Thread {
                // Bounded, but by enough that a slow switch under a loaded suite cannot outlast it.
                for _ in 0..<50_000 where !stop.withLockedValue({ $0 }) {
                    do {
                        _ = try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1("81.2.69.160"))
                        served.withLockedValue { $0 += 1 }
                    } catch {
                        failures.withLockedValue { $0.append("\(error)") }
                    }
                }
                finished.withLockedValue { $0 = true }
            }
            traffic.start()
            let client = try redis.client()
            let geo = try Self.geoSpec(database: PluginFixtures.database("GeoIP2-City-Test.mmdb"))
            try client.publish("setPolicy", geo.description)
            #expect(await eventually { proxy.router.policy.name == "geo" })
            #expect(
                await eventually {
                    (try? BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1("81.2.69.160"))) == "gb"
                }
            )
            try client.publish("setPolicy", "geo {\"database\": \"/no/such.mmdb\"}")
            #expect(await eventually { controlPlane.statistics.refusedMessages == 1 })
            #expect(proxy.router.policy.name == "geo")
            try client.publish("setPolicy", "round-robin")
            #expect(await eventually { proxy.router.policy.name == "round-robin" })
            let before = served.withLockedValue { $0 }
            #expect(await eventually(timeoutSeconds: 20) { served.withLockedValue { $0 } > before + 20 })
            stop.withLockedValue { $0 = true }
            // Joined: the traffic thread has ended, so its every client is counted below.
            #expect(await eventually { finished.withLockedValue { $0 } })
            #expect(failures.withLockedValue { $0 }.isEmpty)
            // The connection opened before both switches still relays.
            try held.send("still here\n")
            #expect(try held.readLine() == "still here")
        }
    }
}
