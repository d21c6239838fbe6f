import Atomics
import CLBPolicy
import Foundation
import LBKit
import Logging
import NIOConcurrencyHelpers
import Policies
import Testing

@testable import l4lb

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
        #expect(
            reasons["bad-abi.so"]?.contains(
                "built for plugin ABI 99.0, l4lb speaks \(PluginLibrary.abiMajor).\(PluginLibrary.abiMinor)"
            ) == true
        )
        #expect(reasons["no-entry.so"]?.contains("no l4lb_policy_entry symbol") == true)
        #expect(reasons["garbage.so"]?.contains("not a loadable shared library") == true)
        #expect(reasons["writable.so"]?.contains("writable by users other than its owner") == true)
        #expect(reasons.values.allSatisfy { $0.contains(directory) })
        #expect(Set(catalog.plugins.map(\.name)) == ["fixture-create-fails", "fixture-bad-index"])
    }

    @Test("a symlink into a world-writable directory, or a file owned by another user, is refused before dlopen")
    func symlinkAndOwnerChecks() throws {
        let safe = try PluginFixtures.makeDirectory()
        let open = try PluginFixtures.makeDirectory()
        defer {
            try? FileManager.default.removeItem(atPath: safe)
            try? FileManager.default.removeItem(atPath: open)
        }
        // The link sits in a safe directory; the file it points to does not.
        try FileManager.default.copyItem(
            atPath: PluginFixtures.library("l4lb-policy-source-hash"),
            toPath: "\(open)/real.so"
        )
        chmod(open, 0o777)
        #expect(symlink("\(open)/real.so", "\(safe)/linked.so") == 0)
        // A file of another user's (the tests run as root, which may give one away).
        try FileManager.default.copyItem(
            atPath: PluginFixtures.library("l4lb-policy-source-hash"),
            toPath: "\(safe)/foreign.so"
        )
        try #require(chown("\(safe)/foreign.so", 65_534, 65_534) == 0, "chown needs root")
        do {
            _ = try PluginLibrary.load(path: "\(safe)/linked.so")
            Issue.record("a plugin reached through a symlink into a world-writable directory loaded")
        } catch {
            #expect(error.message.contains("its directory \(open) is writable by users other than its owner"))
        }
        do {
            _ = try PluginLibrary.load(path: "\(safe)/foreign.so")
            Issue.record("a plugin owned by another user loaded")
        } catch {
            #expect(error.message.contains("owned by another user (uid 65534)"))
        }
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
            let (directory, name) = try PluginFixtures.directory(with: "l4lb-fixture-bad-index", r)
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: backends.map(\.spec), ["--plugin-dir", directory, "--policy", name])
            #expect(proxy.router.policy.name == name)
            var served = Set<String>()
            for _ in 0..<6 { served.insert(try BlockingClient.greeting(port: proxy.port)) }
            #expect(served == ["a", "b"])
            #expect(proxy.pluginFaults.total == 6)
        }
    }

    @Test("a plugin built outside the package with just cc -shared -fPIC and the header loads (docs/plugins.md)")
    func builtWithCC() throws {
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = PluginFixtures.repositoryRoot.appendingPathComponent("Plugins/SourceHashPolicy/source_hash.c")
        #expect(try PluginFixtures.compilePlugin(source.path, to: "\(directory)/source-hash.so") == 0)
        let plugin = try PluginLibrary.load(path: "\(directory)/source-hash.so")
        #expect(plugin.name == "source-hash")
    }

    @Test("ABI 1.x both ways: 1.0 and 1.1 plugins load into this l4lb; this l4lb's plugins load into 1.0 and 1.1 hosts")
    func minorVersionsInterwork() throws {
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Plugins as built against ABI 1.0 and 1.1: each declares its own descriptor size. The 1.1
        // one leaves garbage where 1.2's explain would be, which l4lb must not call.
        for (version, size) in [("0", "L4LB_POLICY_DESCRIPTOR_SIZE_1_0"), ("1", "L4LB_POLICY_DESCRIPTOR_SIZE_1_1")] {
            let source = """
                #include "l4lb_policy.h"
                static int marker;
                static void *old_new(const char *c, size_t n, char *e, size_t cap) { return &marker; }
                static void old_destroy(void *i) {}
                static int64_t old_pick(void *i, const l4lb_address *a, const l4lb_backend *b, size_t n) {
                    return n > 0 ? 0 : L4LB_PICK_NONE;
                }
                int l4lb_policy_entry(l4lb_policy_descriptor *d, size_t size) {
                    if (size < \(size)) return 1;
                    d->abi_major = 1; d->abi_minor = \(version);
                    d->struct_size = \(size);
                    d->name = "old-plugin-\(version)";
                    d->instance_new = old_new; d->instance_destroy = old_destroy; d->pick = old_pick;
                    if (size > \(size)) d->explain = (void *)1;
                    return 0;
                }
                """
            try Data(source.utf8).write(to: URL(fileURLWithPath: "\(directory)/old\(version).c"))
            #expect(
                try PluginFixtures.compilePlugin("\(directory)/old\(version).c", to: "\(directory)/old\(version).so")
                    == 0
            )
            let old = try PluginLibrary.load(path: "\(directory)/old\(version).so")
            #expect(old.name == "old-plugin-\(version)" && old.abiMajor == 1 && old.abiMinor == UInt32(version))
            #expect(!old.explains)
            let policy = try PluginPolicy(
                plugin: old,
                spec: PolicySpec(name: old.name),
                fallback: RoundRobinPolicy(),
                faults: PluginFaults(logger: Logger(label: "test"))
            )
            let router = Router(policy: policy)
            try router.setPool([BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 9))])
            let explained = ExplainAnswer(router: router, client: ClientAddress(text: "192.0.2.1")!)
            #expect(
                explained.steps == [
                    "plugin old-plugin-\(version) (ABI 1.\(version)) does not explain its picks"
                ]
            )
            #expect(explained.backend == nil)
        }

        // This package's plugins, entered by hosts that pass 1.0 and 1.1 descriptors: they load, and
        // write nothing past the end (explain stays unset), and by this host: explain is set.
        let hostEnd = MemoryLayout<l4lb_policy_descriptor>.offset(of: \.host)!
        let explainEnd =
            MemoryLayout<l4lb_policy_descriptor>.offset(of: \.explain)! + MemoryLayout<UnsafeRawPointer?>.size
        for product in ["l4lb-policy-source-hash", "l4lb-policy-geo"] {
            let handle = try #require(dlopen(PluginFixtures.library(product), RTLD_NOW | RTLD_LOCAL))
            let entry = unsafeBitCast(try #require(dlsym(handle, "l4lb_policy_entry")), to: l4lb_policy_entry_fn.self)
            for size in [hostEnd, hostEnd + MemoryLayout<UnsafeRawPointer?>.size] {
                var descriptor = l4lb_policy_descriptor()
                #expect(entry(&descriptor, size) == 0, "\(product)")
                #expect(descriptor.abi_major == 1 && descriptor.name != nil && descriptor.pick != nil)
                #expect(descriptor.explain == nil, "\(product) wrote explain past a \(size)-byte descriptor")
            }
            var descriptor = l4lb_policy_descriptor()
            #expect(entry(&descriptor, explainEnd) == 0 && descriptor.explain != nil, "\(product)")
            #expect(entry(&descriptor, hostEnd - 1) != 0, "\(product) accepted a descriptor too small")
        }
    }

    @Test("ABI 1.2 explain: source-hash explains the pick it makes; a bad explained answer shows the fallback")
    func pluginExplains() throws {
        let registry = PluginFixtures.registry()
        let router = Router(policy: try registry.makePolicy(PolicySpec(name: "source-hash")))
        let specs = (1...4).map { BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 9000 + $0)) }
        try router.setPool(specs)
        for text in ["192.0.2.1", "198.51.100.200", "2001:db8::7"] {
            let client = ClientAddress(text: text)!
            let explained = ExplainAnswer(router: router, client: client)
            let picked = router.table.selector.pick(for: client, excluding: .none)
            #expect(explained.backend == picked.map { router.pool[$0].address.description })
            #expect(
                explained.steps.first
                    == "rendezvous hash of the client address over 4 healthy of 4, by weight"
            )
            #expect(
                explained.steps.last?.hasPrefix("highest score: \(explained.backend!) ") == true
            )
        }

        // A plugin whose explain answers an index out of range: the explanation says a pick would
        // fall back, and names the fallback's backend.
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = """
            #include <string.h>
            #include "l4lb_policy.h"
            static int marker;
            static void *make(const char *c, size_t n, char *e, size_t cap) { return &marker; }
            static void destroy(void *i) {}
            static int64_t pick(void *i, const l4lb_address *a, const l4lb_backend *b, size_t n) { return 0; }
            static int64_t explain(void *i, const l4lb_address *a, const l4lb_backend *b, size_t n,
                                   char *text, size_t capacity, size_t *length) {
                const char *says = "always seven";
                *length = strlen(says) < capacity ? strlen(says) : capacity;
                memcpy(text, says, *length);
                return 7;
            }
            int l4lb_policy_entry(l4lb_policy_descriptor *d, size_t size) {
                if (!L4LB_POLICY_HAS_EXPLAIN(size)) return 1;
                d->abi_major = L4LB_POLICY_ABI_MAJOR; d->abi_minor = L4LB_POLICY_ABI_MINOR;
                d->struct_size = sizeof(*d);
                d->name = "seven";
                d->instance_new = make; d->instance_destroy = destroy; d->pick = pick; d->explain = explain;
                return 0;
            }
            """
        try Data(source.utf8).write(to: URL(fileURLWithPath: "\(directory)/seven.c"))
        #expect(try PluginFixtures.compilePlugin("\(directory)/seven.c", to: "\(directory)/seven.so") == 0)
        let seven = try PluginLibrary.load(path: "\(directory)/seven.so")
        #expect(seven.explains && seven.abiMinor == PluginLibrary.abiMinor)
        let policy = try PluginPolicy(
            plugin: seven,
            spec: PolicySpec(name: "seven"),
            fallback: RoundRobinPolicy(),
            faults: PluginFaults(logger: Logger(label: "test"))
        )
        router.setPolicy(policy)
        let explained = ExplainAnswer(router: router, client: ClientAddress(text: "192.0.2.1")!)
        #expect(
            explained.steps.prefix(2) == [
                "always seven", "answered 7, not a healthy backend: a pick falls back to round-robin",
            ]
        )
        #expect(explained.backend != nil)
    }

    @Test("a plugin logs through l4lb (ABI 1.1): tagged with its name, one line, at most 20 lines a second")
    func pluginLogThroughTheHost() async throws {
        let captured = CapturedLog()
        // The host's clock is the test's: a second passes when the test says so.
        let clock = ManagedAtomic<Int64>(1_000_000_000)
        let host = PluginHost(
            path: "/somewhere/plugin.so",
            makeLogger: { captured.logger() },
            clock: { clock.load(ordering: .relaxed) }
        )
        let plugin = try PluginLibrary.load(
            path: PluginFixtures.library("l4lb-policy-source-hash"),
            host: host
        )
        #expect(plugin.abiMinor == PluginLibrary.abiMinor)
        // The C example plugin logs when an instance is created, through the pointer it was given.
        _ = try PluginPolicy(
            plugin: plugin,
            spec: PolicySpec(name: "source-hash"),
            fallback: RoundRobinPolicy(),
            faults: PluginFaults(logger: captured.logger())
        )
        let created = try #require(captured.lines.first)
        #expect(created.level == .info)
        #expect(created.message.hasPrefix("instance created"))
        #expect(created.metadata["plugin"] == "source-hash")

        // What any plugin thread calls: the C function pointer, with the host pointer.
        let log = try #require(host.services.pointee.log)
        func send(_ text: String, level: Int32) {
            var text = text
            text.withUTF8 { bytes in
                bytes.withMemoryRebound(to: CChar.self) { log(host.services, level, $0.baseAddress, $0.count) }
            }
        }
        send("first line\nsecond line", level: Int32(L4LB_LOG_WARNING))
        send(String(repeating: "x", count: 5000), level: 99)
        #expect(captured.lines.count == 3)
        #expect(captured.lines[1] == .init(level: .warning, message: "first line", metadata: ["plugin": "source-hash"]))
        #expect(captured.lines[2].level == .error)
        #expect(captured.lines[2].message.utf8.count == PluginHost.maximumMessageBytes)
        for index in 0..<100 { send("flood \(index)", level: Int32(L4LB_LOG_DEBUG)) }
        // Within one second 20 lines pass, the three above included.
        let flood = captured.lines.dropFirst(3)
        #expect(flood.count == PluginHost.linesPerSecond - 3)
        #expect(flood.allSatisfy { $0.level == .debug })
        // A second later the next line passes and tells how many were held back.
        clock.wrappingIncrement(by: 999_999_999, ordering: .relaxed)
        send("still held back", level: Int32(L4LB_LOG_INFO))
        #expect(captured.lines.count == PluginHost.linesPerSecond)
        clock.wrappingIncrement(by: 1, ordering: .relaxed)
        send("after the flood", level: Int32(L4LB_LOG_INFO))
        let after = try #require(captured.lines.last)
        #expect(after.message == "after the flood")
        #expect(after.metadata["suppressed"] == "\(100 - flood.count + 1)")
    }

    @Test("the C example plugin: source-hash keeps a client on one backend")
    func sourceHash() async throws {
        try await withTestResources { r in
            let backends = try await r.greeters(["a", "b", "c"])
            let proxy = try await r.l4lb(
                backends: backends.map(\.spec),
                ["--policy", "source-hash", "--accept-proxy-protocol"]
            )
            var byClient: [String: Set<String>] = [:]
            // The backends' ports, and so the hashes, change from run to run: with 6 clients all
            // landing on one of 3 backends happened 1 run in 243. With 30 it is 1 in 10^14.
            let sources = ["81.2.69.160", "2001:218::1"] + (1...28).map { "10.\($0).\($0 * 7 % 256).9" }
            for source in sources {
                for _ in 0..<2 {
                    byClient[source, default: []].insert(
                        try BlockingClient.greeting(port: proxy.port, header: ProxyHeaders.v1(source))
                    )
                }
            }
            #expect(byClient.values.allSatisfy { $0.count == 1 })
            #expect(Set(byClient.values.map { $0.first! }).count > 1)
        }
    }
}
