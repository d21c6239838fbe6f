import Foundation
import LBKit
import Testing

@testable import l4lb

/// contrib/: the Grafana dashboard and the Prometheus alert rules, checked with Debian's promtool
/// and against the metrics a running l4lb really exports.
@Suite("Dashboards and alerts")
struct MonitoringTests {
    static let promtool = "/usr/bin/promtool"
    static let rules = PluginFixtures.repositoryRoot.appendingPathComponent("contrib/prometheus/alerts.yml").path
    static let dashboard = PluginFixtures.repositoryRoot.appendingPathComponent("contrib/grafana/l4lb.json").path

    /// The metric names in `text`: every `l4lb_...` word.
    static func metricNames(in text: String) -> Set<String> {
        Set(text.matches(of: #/l4lb_[a-z0-9_]+/#).map { String($0.output) })
    }

    @Test("promtool check rules accepts the alert rules")
    func promtoolChecksTheRules() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.promtool), "scripts/test installs prometheus")
        let (status, text) = try await runProcess(Self.promtool, ["check", "rules", Self.rules])
        #expect(status == 0, "\(text)")
        #expect(text.contains("SUCCESS: 6 rules found"), "\(text)")
    }

    @Test("every metric the dashboard and the rules name is one a running l4lb exports")
    func namesAreExported() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backend = try await r.backend(.greet("a"))
            let proxy = try await r.l4lb(backends: [backend.spec], redis: redis, ["--admin", "127.0.0.1:0"])
            #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            let (status, body) = try httpGet(port: try #require(proxy.adminAddress?.port), path: "/metrics")
            #expect(status == 200)
            let exported = Set(try PrometheusText(body).types.keys)

            let dashboard = try String(contentsOfFile: Self.dashboard, encoding: .utf8)
            #expect((try JSONSerialization.jsonObject(with: Data(dashboard.utf8)) as? [String: Any])?["panels"] != nil)
            let rules = try String(contentsOfFile: Self.rules, encoding: .utf8)
            let named = Self.metricNames(in: dashboard).union(Self.metricNames(in: rules))
            #expect(named.count >= 15)
            #expect(named.subtracting(exported).isEmpty, "not exported: \(named.subtracting(exported).sorted())")
        }
    }
}
