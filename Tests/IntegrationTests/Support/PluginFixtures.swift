import Foundation
import LBKit
import Logging
import Policies

@testable import l4lb

/// The plugin libraries `swift build` made next to the test bundle, and the MaxMind fixtures.
enum PluginFixtures {
    static var productsDirectory: String { L4LBProcess.executableURL.deletingLastPathComponent().path }

    /// A plugin product, e.g. "l4lb-policy-geo" -> .../libl4lb-policy-geo.so.
    static func library(_ product: String) -> String {
        "\(productsDirectory)/lib\(product).so"
    }

    /// The repository's root directory.
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// A MaxMind test database from Tests/Fixtures/maxmind.
    static func database(_ name: String) -> String {
        repositoryRoot.appendingPathComponent("Tests/Fixtures/maxmind/\(name)").path
    }

    /// Builds a plugin the way docs/plugins.md tells authors to: `cc -shared -fPIC` and the header
    /// (from `include`, by default the repository's). Returns the compiler's exit status.
    static func compilePlugin(
        _ source: String,
        to output: String,
        include: String? = nil,
        defines: [String] = []
    ) throws -> Int32 {
        let compiler = try ChildProcess(
            "/usr/bin/env",
            [
                "cc", "-shared", "-fPIC", "-O2", "-I",
                include ?? repositoryRoot.appendingPathComponent("Sources/CLBPolicy/include").path,
            ] + defines.map { "-D\($0)" } + ["-o", output, source]
        )
        guard compiler.waitUntilExit(timeoutSeconds: 120) else {
            compiler.send(SIGKILL)
            throw TestFailure("cc did not finish compiling \(source) within 120 s")
        }
        return compiler.exitStatus ?? -1
    }

    /// The registry the executable builds: built-ins plus l4lb's own plugins next to the binaries.
    static func registry(logger: Logger = Logger(label: "test")) -> PolicyRegistry {
        PluginOptions.makeRegistry(catalog: PluginOptions.makeCatalog(directories: []), logger: logger).0
    }

    /// A private plugin directory, removed when the test ends, holding a copy of `product`; the
    /// directory and the policy name the plugin declares.
    static func directory(with product: String, _ r: TestResources) throws -> (path: String, policy: String) {
        let directory = try Self.makeDirectory()
        r.onStop { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: Self.library(product), toPath: "\(directory)/\(product).so")
        return (directory, try PluginLibrary.load(path: Self.library(product)).name)
    }

    /// A private directory (mode 0755) for plugin files a test puts together.
    static func makeDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("l4lb-plugins-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(
            atPath: path,
            withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o755]
        )
        return path
    }
}

/// Test clients that introduce themselves with a PROXY protocol header.
enum ProxyHeaders {
    static func v1(_ source: String, port: Int = 40_000) -> [UInt8] {
        let family = source.contains(":") ? "TCP6" : "TCP4"
        let destination = source.contains(":") ? "::1" : "127.0.0.1"
        return Array("PROXY \(family) \(source) \(destination) \(port) 8080\r\n".utf8)
    }

    static func v2(_ source: String, port: UInt16 = 40_000) -> [UInt8] {
        var address = [UInt8](repeating: 0, count: source.contains(":") ? 16 : 4)
        _ = address.withUnsafeMutableBytes {
            inet_pton(source.contains(":") ? AF_INET6 : AF_INET, source, $0.baseAddress)
        }
        let destination = [UInt8](repeating: 0, count: address.count)
        let ports: [UInt8] = [UInt8(port >> 8), UInt8(port & 0xFF), 0x1F, 0x90]
        let payload = address + destination + ports
        return [
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21,
            source.contains(":") ? 0x21 : 0x11, 0, UInt8(payload.count),
        ] + payload
    }
}
