import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Running out of local ports for backend connections is l4lb's shortage, not a backend's. Shown in
/// a network namespace the test makes, where `ip_local_port_range` leaves four ports for connects
/// (Tests/Fixtures/netns/port_exhaustion.py does the work inside it).
@Suite("Local port exhaustion")
struct PortExhaustionTests {
    struct Report: Decodable {
        var served_first: Int
        var refused: Int
        var served_after: Bool
        var log: [String]
    }

    @Test(
        "with four local ports, the fifth client is refused, the backend is never retired, and it serves again",
        .enabled(if: getuid() == 0, "a network namespace needs root (unshare -n)")
    )
    func portExhaustion() async throws {
        let script = PluginFixtures.repositoryRoot.appendingPathComponent("Tests/Fixtures/netns/port_exhaustion.py")
        let run = try await runProcess(
            "/usr/bin/unshare",
            ["-n", "python3", script.path, L4LBProcess.executableURL.path]
        )
        #expect(run.status == 0, "\(run.output.suffix(3000))")
        let json = try #require(run.output.split(separator: "\n").last, "no report: \(run.output.suffix(2000))")
        let report = try JSONDecoder().decode(Report.self, from: Data(json.utf8))
        let log = report.log.joined()
        #expect(report.served_first == 4, "\(log)")
        #expect(report.refused == 8, "\(log)")
        #expect(report.served_after, "\(log)")
        #expect(log.contains("no free local port for a backend connection"), "\(log)")
        #expect(!log.contains("backend retired"), "\(log)")
        #expect(!log.contains("panic mode"), "\(log)")
    }
}
