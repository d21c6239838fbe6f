import Foundation
import LBKit
import Testing

@testable import l4lb

/// The shadow policy (asked about each client, never obeyed) and `l4lb ctl explain`, through a real
/// Redis, real plugins and real clients that introduce themselves with PROXY headers.
@Suite("Shadow policy and ctl explain")
struct ShadowPolicyTests {
    /// One greeting backend per region: "gb" serves GB, "us" serves US, "rest" is the fallback.
    private static func regionBackends(_ r: TestResources) async throws -> [(name: String, spec: BackendSpec)] {
        var backends: [(String, BackendSpec)] = []
        for (name, region) in [("gb", "GB"), ("us", "US"), ("rest", "backup")] {
            let backend = try await r.backend(.greet(name))
            backends.append(
                (name, BackendSpec(address: HostAndPort(host: "127.0.0.1", port: backend.port), region: region))
            )
        }
        return backends
    }

    private static let geo =
        #"geo {"database": "\#(PluginFixtures.database("GeoIP2-City-Test.mmdb"))", "fallback": ["backup"]}"#

    @Test(
        "setShadowPolicy geo beside round-robin: per-backend and per-region counts, agreement, /status, /metrics and ctl shadow; clients follow the active policy; clearShadowPolicy removes it"
    )
    func shadowThroughRedis() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await Self.regionBackends(r)
            let proxy = try await r.l4lb(
                backends: backends.map(\.spec),
                redis: redis,
                ["--accept-proxy-protocol", "--admin", "127.0.0.1:0", "--instance-id", "shadow-1"]
            )
            let client = try redis.client()
            try client.publish("setShadowPolicy", Self.geo)
            #expect(await eventually { proxy.router.table.shadow != nil })
            #expect(try client.command(["GET", "shadowPolicy"]).text == Self.geo)

            // Six clients from GB and three from the US: round-robin serves each backend three.
            var served: [String: Int] = [:]
            var agreements = 0
            for (source, region) in Array(repeating: ("81.2.69.160", "gb"), count: 6)
                + Array(repeating: ("216.160.83.56", "us"), count: 3)
            {
                let name = try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1(source))
                served[name, default: 0] += 1
                if name == region { agreements += 1 }
            }
            #expect(served == ["gb": 3, "us": 3, "rest": 3], "the active policy, not the shadow, chose")

            let report = try #require(proxy.router.shadowReport)
            #expect(report.policy == "geo" && report.sampled == 9 && report.faults == 0 && !report.dropped)
            #expect(report.agreed == agreements)
            #expect(report.backends.map(\.picks) == [6, 3, 0])

            let admin = try #require(proxy.adminAddress?.port)
            let status = try JSONDecoder().decode(
                InstanceStatus.Document.self,
                from: Data(try httpGet(port: admin, path: "/status").body.utf8)
            )
            #expect(status.shadow == report)
            let metrics = try httpGet(port: admin, path: "/metrics").body
            let gb = backends[0].spec.address
            #expect(
                metrics.contains(#"l4lb_shadow_picks_total{policy="geo",backend="\#(gb)",region="GB"} 6"#),
                "\(metrics)"
            )
            #expect(metrics.contains(#"l4lb_shadow_sampled_total{policy="geo"} 9"#))
            #expect(metrics.contains(#"l4lb_shadow_agreed_total{policy="geo"} \#(agreements)"#))

            // ctl shadow sums the instances' status keys (refreshed every 200 ms here).
            var text = ""
            #expect(
                await eventually {
                    let process = try? L4LBProcess(arguments: ["ctl", "shadow", "--redis", redis.url])
                    _ = await process?.waitForExit(timeoutSeconds: 10)
                    text = process?.text ?? ""
                    return text.contains("sampled 9 clients")
                },
                "got: \(text)"
            )
            #expect(text.contains("shadow policy \(Self.geo) on 1 of 1 instances"))
            #expect(text.contains("  GB  66.7%  1 of 3 backends"), "\(text)")
            #expect(text.contains("  US  33.3%  1 of 3 backends"), "\(text)")
            #expect(text.contains("  backup  0.0%  1 of 3 backends"), "\(text)")

            try client.publish("clearShadowPolicy", "")
            #expect(await eventually { proxy.router.table.shadow == nil })
            #expect(try client.command(["EXISTS", "shadowPolicy"]) == .integer(0))
            #expect(!(try httpGet(port: admin, path: "/metrics").body.contains("l4lb_shadow_")))
        }
    }

    @Test("a shadow plugin that faults is counted and dropped: every client is served, the active policy untouched")
    func faultyShadowIsDropped() async throws {
        try await withTestResources { r in
            let (directory, name) = try PluginFixtures.directory(with: "l4lb-fixture-bad-index", r)
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(
                backends: backends.map(\.spec),
                ["--plugin-dir", directory, "--shadow-policy", name]
            )
            var served = Set<String>()
            for _ in 0..<4 { served.insert(try BlockingClient.greeting(port: proxy.port)) }
            #expect(served == ["a", "b"])
            let report = try #require(proxy.router.shadowReport)
            #expect(report.dropped && report.faults == 1 && report.sampled == 1, "\(report)")
            #expect(proxy.pluginFaults.total == 0, "the shadow's faults are its own")
        }
    }

    @Test("--shadow-sample 25%: one new client in four is asked; a bad percent is refused")
    func sampling() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(
                backends: backends.map(\.spec),
                ["--shadow-policy", "maglev", "--shadow-sample", "25%"]
            )
            for _ in 0..<8 { _ = try BlockingClient.greeting(port: proxy.port) }
            let report = try #require(proxy.router.shadowReport)
            #expect(report.sampled == 2 && report.samplePercent == 25)
            #expect(report.backends.map(\.picks).reduce(0, +) == 2)
        }
        for bad in ["0%", "101", "ten"] {
            #expect(throws: L4LBError.self) {
                try RunCommand.parse(["--shadow-policy", "maglev", "--shadow-sample", bad]).makeAllSettings()
            }
        }
    }

    @Test(
        "ctl explain through Redis: every instance answers, or only the one named; the answer is the backend that serves the client"
    )
    func explainThroughRedis() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b", "c"])
            var proxies: [Application] = []
            for id in ["explain-1", "explain-2"] {
                proxies.append(
                    try await r.l4lb(
                        backends: backends.map(\.spec),
                        redis: redis,
                        [
                            "--policy", "maglev", "--shadow-policy", "round-robin", "--accept-proxy-protocol",
                            "--instance-id", id,
                        ]
                    )
                )
            }
            let source = "198.51.100.7"
            let served = try BlockingClient.greeting(port: proxies[0].port, header: ProxyHeaders.v1(source))
            let servedAddress = backends.first { $0.name == served }!.spec.address.description

            func explain(_ extra: [String]) async throws -> (status: Int32?, answers: [ExplainAnswer], text: String) {
                let process = try L4LBProcess(
                    arguments: ["ctl", "explain", source, "--json", "--redis", redis.url] + extra
                )
                let status = await process.waitForExit(timeoutSeconds: 20)
                let answers = process.text.split(separator: "\n").compactMap {
                    try? JSONDecoder().decode(ExplainAnswer.self, from: Data($0.utf8))
                }
                return (status, answers, process.text)
            }
            let all = try await explain([])
            #expect(all.status == 0, "\(all.text)")
            #expect(all.answers.map(\.instance) == ["explain-1", "explain-2"], "\(all.text)")
            for answer in all.answers {
                #expect(answer.policy == "maglev" && answer.backend == servedAddress)
                #expect(answer.chain.hasPrefix("hash of \(source)"))
                #expect(answer.shadow?.policy == "round-robin" && answer.shadow?.backend != nil)
            }

            let one = try await explain(["--instance", "explain-2"])
            #expect(one.status == 0 && one.answers.map(\.instance) == ["explain-2"], "\(one.text)")

            let nobody = try await explain(["--instance", "no-such-instance"])
            #expect(
                nobody.status != 0 && nobody.text.contains("instance no-such-instance did not answer"),
                "\(nobody.text)"
            )
        }
    }
}
