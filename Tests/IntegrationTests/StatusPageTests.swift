import Foundation
import LBKit
import NIOConcurrencyHelpers
import Testing

@testable import l4lb

/// The status page in a real browser: Debian's chromium, headless, loads `/` from the admin
/// endpoint while traffic flows, runs the page's script, and the test reads the resulting DOM.
@Suite("Status page in a browser")
struct StatusPageTests {
    static let chromium = "/usr/bin/chromium"

    /// Where the browser test leaves its screenshot (`L4LB_TEST_OUTPUT`, or .build/test-output).
    static var outputDirectory: String {
        ProcessInfo.processInfo.environment["L4LB_TEST_OUTPUT"]
            ?? PluginFixtures.repositoryRoot.appendingPathComponent(".build/test-output").path
    }

    /// chromium --headless with `arguments` on `url`; what it printed to standard output.
    static func chromium(_ arguments: [String], url: String) async throws -> String {
        try await offThePool { try Self.chromiumBlocking(arguments, url: url) }
    }

    private static func chromiumBlocking(_ arguments: [String], url: String) throws -> String {
        let profile = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let arguments =
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=\(profile)",
                // Lets the page's timers run 3 s of page time before the DOM is taken.
                "--virtual-time-budget=3000",
            ] + arguments + [url]
        return try ChildProcess.run(Self.chromium, arguments, mergingErrors: false, timeoutSeconds: 120).output
    }

    /// The `data-state` of each backend's row in `dom`.
    static func rows(_ dom: String) -> [String: String] {
        var rows: [String: String] = [:]
        let pattern = #/<tr data-backend="([^"]+)" data-state="([^"]+)">/#
        for match in dom.matches(of: pattern) { rows[String(match.1)] = String(match.2) }
        return rows
    }

    @Test(
        "the page shows the backends and draws the charts while traffic flows; a retired backend's row changes; a screenshot is saved"
    )
    func liveInChromium() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.chromium), "scripts/test installs chromium")
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: backends.map(\.spec), ["--admin", "127.0.0.1:0"])
            let url = "http://127.0.0.1:\(try #require(proxy.adminAddress?.port))/"
            let clients = UpgradeTests.ClientLoop(port: proxy.port)
            // Traffic seen by the sampler: some second has new connections on both backends.
            #expect(
                await eventually(timeoutSeconds: 10) {
                    let series = proxy.history.series
                    return series.count == 2 && series.allSatisfy { ($0.connections.max() ?? 0) > 0 }
                }
            )

            let dom = try await Self.chromium(["--dump-dom"], url: url)
            let names = backends.map { $0.spec.address.description }
            #expect(Self.rows(dom) == [names[0]: "healthy", names[1]: "healthy"], "got: \(dom.prefix(3000))")
            // One line per backend per chart, and a line that rises: points below the baseline.
            let lines = dom.matches(of: #/<polyline points="([^"]*)"/#).map { String($0.1) }
            #expect(lines.count == 4)
            #expect(lines.contains { $0.split(separator: " ").contains { !$0.hasSuffix(",100.0") } }, "got: \(lines)")
            #expect(dom.contains("round-robin"))

            // b dies; the next client to meet it gets it retired; the page says so.
            let reservation = try await backends[1].kill()
            #expect(await eventually { proxy.router.pool.backends[1].isRetired })
            let after = try await Self.chromium(["--dump-dom"], url: url)
            #expect(Self.rows(after)[names[1]] == "retired", "got: \(Self.rows(after))")
            #expect(Self.rows(after)[names[0]] == "healthy")
            #expect(after.contains("\(names[1]) retired"), "the event list names the retirement")

            try FileManager.default.createDirectory(atPath: Self.outputDirectory, withIntermediateDirectories: true)
            let screenshot = "\(Self.outputDirectory)/status-page.png"
            try? FileManager.default.removeItem(atPath: screenshot)
            _ = try await Self.chromium(
                ["--hide-scrollbars", "--window-size=1100,720", "--screenshot=\(screenshot)"],
                url: url
            )
            let png = try Data(contentsOf: URL(fileURLWithPath: screenshot))
            #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
            #expect(png.count > 10_000)
            #expect(await clients.finish())
            withExtendedLifetime(reservation) {}
        }
    }

    @Test("with a shadow policy the page shows its agreement and each backend's share of its picks")
    func shadowInChromium() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b", "c"])
            let proxy = try await r.l4lb(
                backends: backends.map(\.spec),
                ["--admin", "127.0.0.1:0", "--shadow-policy", "maglev"]
            )
            for _ in 0..<9 { _ = try BlockingClient.greeting(port: proxy.port) }
            let report = try #require(proxy.router.shadowReport)
            #expect(report.sampled == 9)
            let dom = try await Self.chromium(
                ["--dump-dom"],
                url: "http://127.0.0.1:\(try #require(proxy.adminAddress?.port))/"
            )
            let agreement = String(format: "%.1f%%", 100 * Double(report.agreed) / 9)
            #expect(dom.contains("shadow maglev: agrees on \(agreement) of 9"), "got: \(dom.prefix(2000))")
            // Every client of this test came from 127.0.0.1: maglev would send all nine to one backend.
            let shares = dom.matches(of: #/<td class="n shadow">([^<]*)</td>/#).map { String($0.1) }
            #expect(shares.sorted() == ["0.0%", "0.0%", "100.0%"], "got: \(shares)")
        }
    }

    @Test("the page is served by l4lb alone: nothing fetched from elsewhere; the endpoints are read-only")
    func selfContained() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            let proxy = try await r.l4lb(backends: [backend.spec], ["--admin", "127.0.0.1:0"])
            let port = try #require(proxy.adminAddress?.port)
            let (status, page) = try httpGet(port: port, path: "/")
            #expect(status == 200)
            #expect(page.contains("<title>l4lb status</title>"))
            // Nothing loaded from anywhere: no script or style source, no link, no web font.
            for reference in ["src=", "href=", "url(", "@import", "https://"] {
                #expect(!page.contains(reference), "the page references \(reference)")
            }
            let (dataStatus, data) = try httpGet(port: port, path: "/ui.json")
            #expect(dataStatus == 200)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any])
            #expect(object["status"] != nil && object["history"] != nil && object["events"] != nil)
        }
    }
}
