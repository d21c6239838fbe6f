import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// scripts/package: the Debian package, checked with dpkg-deb and lintian, unpacked into a scratch
/// root, and started from there with its sample configuration.
@Suite("Debian package", .serialized)
struct PackageTests {
    @Test("the .deb holds what it should, passes lintian, and its binary runs from where it unpacks")
    func package() async throws {
        let manual = PluginFixtures.repositoryRoot.appendingPathComponent(".build/manual/l4lb.1").path
        #expect(FileManager.default.fileExists(atPath: manual), "scripts/test makes it first (scripts/manual)")
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let built = try await runProcess(
            "/bin/bash",
            [
                "scripts/package", "--bin-path", PluginFixtures.productsDirectory, "--manual", manual, "--output",
                directory,
            ]
        )
        #expect(built.status == 0, "\(built.output)")
        let deb = try #require(built.output.split(separator: "\n").last.map(String.init))
        #expect(deb.hasSuffix("_amd64.deb") || deb.hasSuffix(".deb"))

        let contents = try await runProcess("/usr/bin/dpkg-deb", ["-c", deb]).output
        for path in [
            "./usr/bin/l4lb", "./usr/lib/l4lb/plugins/libl4lb-policy-geo.so", "./usr/lib/l4lb/swift/libswiftCore.so",
            "./usr/include/l4lb/l4lb_policy.h", "./lib/systemd/system/l4lb.service", "./lib/systemd/system/l4lb.socket",
            "./etc/l4lb/l4lb.conf", "./usr/share/man/man1/l4lb.1.gz", "./usr/share/bash-completion/completions/l4lb",
            "./usr/share/zsh/vendor-completions/_l4lb", "./usr/share/fish/vendor_completions.d/l4lb.fish",
            "./usr/share/doc/l4lb/copyright",
        ] {
            #expect(contents.contains(" \(path)\n"), "missing \(path)")
        }
        #expect(!contents.contains("fixture"), "test plugins are not packaged")

        let control = "\(directory)/control"
        #expect(try await runProcess("/usr/bin/dpkg-deb", ["-e", deb, control]).status == 0)
        let postinst = try String(contentsOfFile: "\(control)/postinst", encoding: .utf8)
        #expect(postinst.contains("adduser --system --group"))
        #expect(try String(contentsOfFile: "\(control)/conffiles", encoding: .utf8) == "/etc/l4lb/l4lb.conf\n")
        let fields = try String(contentsOfFile: "\(control)/control", encoding: .utf8)
        #expect(fields.contains("Depends: libc6, libhiredis0.14, libmaxminddb0, adduser"))

        // Lintian: no error, and no warning but the one docs/operations.md explains.
        let lintian = try await runProcess("/usr/bin/lintian", [deb]).output
        let tags = lintian.split(separator: "\n").filter { $0.hasPrefix("E:") || $0.hasPrefix("W:") }
        #expect(tags.allSatisfy { $0.contains("initial-upload-closes-no-bugs") }, "\(tags)")

        // Unpacked into a scratch root, it runs on its own Swift runtime, finds its plugins, and
        // starts with the sample configuration.
        let root = "\(directory)/root"
        #expect(try await runProcess("/usr/bin/dpkg-deb", ["-x", deb, root]).status == 0)
        let libraries = try await runProcess("/usr/bin/ldd", ["\(root)/usr/bin/l4lb"]).output
        #expect(libraries.contains("\(root)/usr/bin/../lib/l4lb/swift/libswiftCore.so"), "\(libraries)")
        #expect(!libraries.contains("not found"), "\(libraries)")
        let plugins = try L4LBProcess(arguments: ["plugins"], executable: URL(fileURLWithPath: "\(root)/usr/bin/l4lb"))
        #expect(await plugins.waitForExit(timeoutSeconds: 10) == 0)
        #expect(plugins.text.contains("\(root)/usr/lib/l4lb/plugins/libl4lb-policy-geo.so"), "\(plugins.text)")
        let running = try L4LBProcess(
            arguments: [
                "--config", "\(root)/etc/l4lb/l4lb.conf", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            ],
            executable: URL(fileURLWithPath: "\(root)/usr/bin/l4lb")
        )
        defer { running.kill() }
        #expect(await running.listeningPort() != nil, "got: \(running.text)")
        running.send(SIGTERM)
        #expect(await running.waitForExit(timeoutSeconds: 15) == 0)

        // The manual has the signals, the Redis names and the files.
        let page = try await runProcess("/bin/sh", ["-c", "gzip -dc \(root)/usr/share/man/man1/l4lb.1.gz"]).output
        for word in ["SIGUSR2", "serverPool", "/etc/l4lb/l4lb.conf", "--drain-timeout"] {
            #expect(page.contains(word), "the manual lacks \(word)")
        }
        let fish = try String(contentsOfFile: "\(root)/usr/share/fish/vendor_completions.d/l4lb.fish", encoding: .utf8)
        #expect(fish.contains("upgrade-timeout"))
    }
}
