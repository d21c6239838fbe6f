import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `scripts/install`, run on the build the tests use (`--bin-path`), staged under a temporary
/// `--destdir`: what lands where, and that the installed binary, plugins, header and sample
/// configuration work from there.
@Suite("Installation")
struct InstallTests {
    @Test("scripts/install --systemd stages binary, plugins, header, docs, unit and config; they work from there")
    func stagedInstall() async throws {
        let stage = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: stage) }
        let install = try ChildProcess(
            "/bin/bash",
            [
                PluginFixtures.repositoryRoot.appendingPathComponent("scripts/install").path,
                "--prefix", "/opt/l4lb", "--destdir", stage, "--systemd", "--bin-path",
                PluginFixtures.productsDirectory,
            ],
            standardOutput: .null
        )
        let finished = try await offThePool { install.waitUntilExit(timeoutSeconds: 300) }
        try #require(finished && install.exitStatus == 0, "scripts/install: \(install.ending)")

        let root = "\(stage)/opt/l4lb"
        let expected: [(path: String, mode: mode_t)] = [
            ("\(root)/bin/l4lb", 0o755),
            ("\(root)/lib/l4lb/plugins/libl4lb-policy-geo.so", 0o644),
            ("\(root)/lib/l4lb/plugins/libl4lb-policy-source-hash.so", 0o644),
            ("\(root)/include/l4lb/l4lb_policy.h", 0o644),
            ("\(root)/share/doc/l4lb/README.md", 0o644),
            ("\(root)/share/doc/l4lb/operations.md", 0o644),
            ("\(stage)/etc/l4lb/l4lb.conf", 0o644),
        ]
        for file in expected {
            var info = stat()
            #expect(stat(file.path, &info) == 0, "missing: \(file.path)")
            #expect(info.st_mode & 0o777 == file.mode, "mode of \(file.path)")
        }
        // Test fixtures are products of the same build, but not plugins anyone should install.
        let plugins = try FileManager.default.contentsOfDirectory(atPath: "\(root)/lib/l4lb/plugins")
        #expect(plugins.sorted() == ["libl4lb-policy-geo.so", "libl4lb-policy-source-hash.so"])
        let unit = try String(contentsOfFile: "\(stage)/etc/systemd/system/l4lb.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/opt/l4lb/bin/l4lb --config /etc/l4lb/l4lb.conf"))
        #expect(unit.contains("Type=notify"))
        #expect(unit.contains("NotifyAccess=all"))
        #expect(!unit.contains("@PREFIX@"))
        let socketUnit = try String(contentsOfFile: "\(stage)/etc/systemd/system/l4lb.socket", encoding: .utf8)
        #expect(socketUnit.contains("ListenStream=0.0.0.0:80"))
        #expect(!socketUnit.contains("@PREFIX@"))

        // The installed binary finds the installed plugins in PREFIX/lib/l4lb/plugins by itself.
        let list = try L4LBProcess(arguments: ["plugins"], executable: URL(fileURLWithPath: "\(root)/bin/l4lb"))
        #expect(await list.waitForExit(timeoutSeconds: 10) == 0)
        #expect(list.text.contains("geo\t"), "got: \(list.text)")
        #expect(list.text.contains("\(root)/lib/l4lb/plugins/libl4lb-policy-source-hash.so"), "got: \(list.text)")

        // The sample configuration starts l4lb (its listen and admin addresses overridden to free
        // ports); SIGTERM stops it cleanly.
        let run = try L4LBProcess(
            arguments: [
                "--config", "\(stage)/etc/l4lb/l4lb.conf", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            ],
            executable: URL(fileURLWithPath: "\(root)/bin/l4lb")
        )
        defer { run.kill() }
        #expect(await run.listeningPort() != nil, "got: \(run.text)")
        run.send(SIGTERM)
        #expect(await run.waitForExit(timeoutSeconds: 15) == 0)

        // Plugin authors build against the installed header alone.
        let source = PluginFixtures.repositoryRoot.appendingPathComponent("Plugins/SourceHashPolicy/source_hash.c")
        let status = try PluginFixtures.compilePlugin(
            source.path,
            to: "\(stage)/source-hash.so",
            include: "\(root)/include/l4lb"
        )
        #expect(status == 0)
    }
}
