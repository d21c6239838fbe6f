import Foundation
import LBKit
import Testing

@testable import l4lb

/// LBKit is the core, without Redis: a package outside this one depends on LBKit alone and builds
/// with hiredis's headers hidden (a mount namespace binds an empty directory over
/// /usr/include/hiredis, as on a host without libhiredis-dev). The same package's target that uses
/// LBControlPlane fails to build there, which shows that the headers really were hidden.
@Suite("An outside package")
struct ExternalPackageTests {
    static let package = PluginFixtures.repositoryRoot.appendingPathComponent("Tests/Fixtures/EmbedderPackage").path
    static let scratch = PluginFixtures.repositoryRoot.appendingPathComponent(".build/embedder").path

    /// `swift build --product product` of the fixture package with /usr/include/hiredis empty;
    /// the exit status and what it printed.
    static func buildWithoutHiredis(_ product: String) async throws -> (status: Int32, output: String) {
        let script = """
            set -e
            empty=$(mktemp -d)
            mount --bind "$empty" /usr/include/hiredis
            # At the lowest priority: a clean build takes both cores for a minute, and the other
            # tests, running meanwhile, have timeouts.
            exec nice -n 19 swift build --package-path "$1" --scratch-path "$2" --product "$3"
            """
        return try await runProcess(
            "/usr/bin/unshare",
            ["--mount", "--propagation", "private", "sh", "-c", script, "sandbox", Self.package, Self.scratch, product]
        )
    }

    @Test("depends on LBKit alone and builds and runs without hiredis; LBControlPlane does not build there")
    func buildsWithoutHiredis() async throws {
        #expect(
            FileManager.default.fileExists(atPath: "/usr/include/hiredis/hiredis.h"),
            "the sandbox hides a real directory"
        )
        let embedder = try await Self.buildWithoutHiredis("Embedder")
        #expect(embedder.status == 0, "\(embedder.output.suffix(2000))")
        let ran = try await runProcess("\(Self.scratch)/debug/Embedder", [])
        #expect(ran.status == 0)
        #expect(ran.output == "embedded LBKit: policy first-healthy, 2 backends, picked 0\n")

        let redisUser = try await Self.buildWithoutHiredis("RedisUser")
        #expect(redisUser.status != 0)
        #expect(redisUser.output.contains("'hiredis/hiredis.h' file not found"), "\(redisUser.output.suffix(2000))")
    }

    @Test("a plugin package outside l4lb, on the Swift SDK alone, builds, loads and routes; docs/plugins.md shows it")
    func swiftPluginPackage() async throws {
        let package = PluginFixtures.repositoryRoot.appendingPathComponent("Examples/PluginPackage").path
        let scratch = PluginFixtures.repositoryRoot.appendingPathComponent(".build/example-plugin").path
        let build = try await runProcess(
            "/usr/bin/nice",
            [
                "-n", "19", "swift", "build", "--package-path", package, "--scratch-path", scratch,
                "--product", "l4lb-policy-region-first",
            ]
        )
        #expect(build.status == 0, "\(build.output.suffix(2000))")
        // The plugin's own package builds the SDK and the ABI's header, and nothing of l4lb's core.
        let modules = try FileManager.default.contentsOfDirectory(atPath: "\(scratch)/debug/Modules")
        #expect(modules.contains("L4LBPluginSDK.swiftmodule") && !modules.contains("LBKit.swiftmodule"), "\(modules)")

        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(
            atPath: "\(scratch)/debug/libl4lb-policy-region-first.so",
            toPath: "\(directory)/region-first.so"
        )
        try await withTestResources { r in
            let near = try await r.backend(.greet("near"))
            let far = try await r.backend(.greet("far"))
            let specs = [
                BackendSpec(address: HostAndPort(host: "127.0.0.1", port: far.port), region: "us"),
                BackendSpec(address: HostAndPort(host: "127.0.0.1", port: near.port), region: "eu"),
            ]
            let proxy = try await r.l4lb(
                backends: specs,
                [
                    "--plugin-dir", directory, "--policy", #"region-first {"region": "eu"}"#, "--admin",
                    "127.0.0.1:0",
                ]
            )
            for _ in 0..<3 { #expect(try BlockingClient.greeting(port: proxy.port) == "near") }
            let admin = try #require(proxy.adminAddress?.port)
            let (status, body) = try httpGet(port: admin, path: "/explain?client=192.0.2.1")
            #expect(status == 200)
            let answer = try JSONDecoder().decode(ExplainAnswer.self, from: Data(body.utf8))
            #expect(answer.steps == ["region eu", "least loaded: \(specs[1].address)"])
            #expect(answer.backend == specs[1].address.description)
            // The SDK's configuration decoding: a missing key is one line naming it.
            #expect {
                try proxy.policies.makePolicy(PolicySpec(parsing: #"region-first {"zone": "eu"}"#))
            } throws: { error in
                "\(error)".contains(#"refused its configuration: the configuration needs "region""#)
            }
        }

        // The documentation's example is this file, word for word.
        let source = try String(contentsOfFile: "\(package)/Sources/RegionFirst/RegionFirst.swift", encoding: .utf8)
        let docs = try String(
            contentsOf: PluginFixtures.repositoryRoot.appendingPathComponent("docs/plugins.md"),
            encoding: .utf8
        )
        #expect(docs.contains(source), "docs/plugins.md does not show Examples/PluginPackage's plugin as it is")
    }
}
