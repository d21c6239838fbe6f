import Foundation
import Testing

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
    static func buildWithoutHiredis(_ product: String) throws -> (status: Int32, output: String) {
        let script = """
            set -e
            empty=$(mktemp -d)
            mount --bind "$empty" /usr/include/hiredis
            # At the lowest priority: a clean build takes both cores for a minute, and the other
            # tests, running meanwhile, have timeouts.
            exec nice -n 19 swift build --package-path "$1" --scratch-path "$2" --product "$3"
            """
        return try runProcess(
            "/usr/bin/unshare",
            ["--mount", "--propagation", "private", "sh", "-c", script, "sandbox", Self.package, Self.scratch, product]
        )
    }

    @Test("depends on LBKit alone and builds and runs without hiredis; LBControlPlane does not build there")
    func buildsWithoutHiredis() throws {
        #expect(
            FileManager.default.fileExists(atPath: "/usr/include/hiredis/hiredis.h"),
            "the sandbox hides a real directory"
        )
        let embedder = try Self.buildWithoutHiredis("Embedder")
        #expect(embedder.status == 0, "\(embedder.output.suffix(2000))")
        let ran = try runProcess("\(Self.scratch)/debug/Embedder", [])
        #expect(ran.status == 0)
        #expect(ran.output == "embedded LBKit: policy first-healthy, 2 backends, picked 0\n")

        let redisUser = try Self.buildWithoutHiredis("RedisUser")
        #expect(redisUser.status != 0)
        #expect(redisUser.output.contains("'hiredis/hiredis.h' file not found"), "\(redisUser.output.suffix(2000))")
    }
}
