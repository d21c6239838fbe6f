import Foundation
import LBKit
import Logging
import NIOConcurrencyHelpers
import Policies
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Policy plugins over the C ABI: real .so files built by this package, loaded with dlopen.
@Suite("Policy plugins")
struct PluginTests {
    @Test("l4lb's own plugins are found next to the executable; fixtures are not")
    func catalogFindsOwnPlugins() {
        let catalog = PluginCatalog(
            directories: [],
            defaultDirectory: PluginFixtures.productsDirectory,
            reservedNames: Set(BuiltinPolicies.names)
        )
        #expect(Set(catalog.plugins.map(\.name)) == ["geo", "source-hash"])
        #expect(catalog.refused.isEmpty)
        #expect(catalog.plugins.allSatisfy { $0.abiMajor == PluginLibrary.abiMajor })
    }

    @Test("each bad plugin file is refused with the file and the reason")
    func badPluginsAreRefused() throws {
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for fixture in ["bad-abi", "no-entry", "create-fails", "bad-index"] {
            try FileManager.default.copyItem(
                atPath: PluginFixtures.library("l4lb-fixture-\(fixture)"),
                toPath: "\(directory)/\(fixture).so"
            )
        }
        try Data("this is not a shared library".utf8).write(to: URL(fileURLWithPath: "\(directory)/garbage.so"))
        try FileManager.default.copyItem(
            atPath: PluginFixtures.library("l4lb-policy-source-hash"),
            toPath: "\(directory)/writable.so"
        )
        chmod("\(directory)/writable.so", 0o666)
        let catalog = PluginCatalog(
            directories: [directory],
            defaultDirectory: nil,
            reservedNames: Set(BuiltinPolicies.names)
        )

        let reasons = Dictionary(
            uniqueKeysWithValues: catalog.refused.map { (($0.path as NSString).lastPathComponent, $0.reason) }
        )
        #expect(reasons["bad-abi.so"]?.contains("built for plugin ABI 99.0, l4lb speaks 1.0") == true)
        #expect(reasons["no-entry.so"]?.contains("no l4lb_policy_entry symbol") == true)
        #expect(reasons["garbage.so"]?.contains("not a loadable shared library") == true)
        #expect(reasons["writable.so"]?.contains("writable by users other than its owner") == true)
        #expect(reasons.values.allSatisfy { $0.contains(directory) })
        #expect(Set(catalog.plugins.map(\.name)) == ["fixture-create-fails", "fixture-bad-index"])
    }

    @Test("a plugin directory writable by others is refused as a whole")
    func unsafeDirectory() throws {
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(
            atPath: PluginFixtures.library("l4lb-policy-source-hash"),
            toPath: "\(directory)/hash.so"
        )
        chmod(directory, 0o777)
        let catalog = PluginCatalog(directories: [directory], defaultDirectory: nil, reservedNames: [])
        #expect(catalog.plugins.isEmpty)
        #expect(catalog.refused.first?.reason.contains("directory") == true)
    }

    @Test("a create that fails shows the plugin's own message")
    func createFails() throws {
        let plugin = try PluginLibrary.load(path: PluginFixtures.library("l4lb-fixture-create-fails"))
        let faults = PluginFaults(logger: Logger(label: "test"))
        #expect {
            try PluginPolicy(
                plugin: plugin,
                spec: PolicySpec(name: plugin.name),
                fallback: RoundRobinPolicy(),
                faults: faults
            )
        } throws: { error in
            "\(error)".contains("fixture refuses every configuration")
        }
    }

    @Test("a pick that answers an out-of-range index falls back to round-robin; the fault is counted")
    func badIndexFallsBack() async throws {
        try await withTestResources { r in
            let plugin = try PluginLibrary.load(path: PluginFixtures.library("l4lb-fixture-bad-index"))
            let faults = PluginFaults(logger: Logger(label: "test"))
            let policy = try PluginPolicy(
                plugin: plugin,
                spec: PolicySpec(name: plugin.name),
                fallback: RoundRobinPolicy(),
                faults: faults
            )
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.proxy(backends: backends.map(\.spec), policy: policy)
            var served = Set<String>()
            for _ in 0..<6 { served.insert(try BlockingClient.greeting(port: proxy.port)) }
            #expect(served == ["a", "b"])
            #expect(faults.total == 6)
        }
    }

    @Test("a plugin built outside the package with just cc -shared -fPIC and the header loads (docs/plugins.md)")
    func builtWithCC() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let compiler = Process()
        compiler.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        compiler.arguments = [
            "cc", "-shared", "-fPIC", "-O2", "-I", root.appendingPathComponent("Sources/CLBPolicy/include").path,
            "-o", "\(directory)/source-hash.so",
            root.appendingPathComponent("Plugins/SourceHashPolicy/source_hash.c").path,
        ]
        try compiler.run()
        compiler.waitUntilExit()
        #expect(compiler.terminationStatus == 0)
        let plugin = try PluginLibrary.load(path: "\(directory)/source-hash.so")
        #expect(plugin.name == "source-hash")
    }

    @Test("the C example plugin: source-hash keeps a client on one backend")
    func sourceHash() async throws {
        try await withTestResources { r in
            let registry = PluginFixtures.registry()
            let policy = try registry.makePolicy(PolicySpec(name: "source-hash"))
            let backends = try await r.greeters(["a", "b", "c"])
            let proxy = try await r.proxy(backends: backends.map(\.spec), policy: policy) {
                $0.acceptProxyProtocol = .seconds(2)
            }
            var byClient: [String: Set<String>] = [:]
            for source in ["81.2.69.160", "89.160.20.112", "216.160.83.56", "2001:218::1", "10.1.2.3", "10.9.9.9"] {
                for _ in 0..<3 {
                    byClient[source, default: []].insert(
                        try ProxyHeaders.greeting(port: proxy.port, header: ProxyHeaders.v1(source))
                    )
                }
            }
            #expect(byClient.values.allSatisfy { $0.count == 1 })
            #expect(Set(byClient.values.map { $0.first! }).count > 1)
        }
    }
}
