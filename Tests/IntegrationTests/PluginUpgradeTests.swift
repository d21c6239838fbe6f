import Foundation
import LBKit
import Logging
import Testing

@testable import l4lb

/// A plugin upgraded while l4lb runs: new builds of one fixture plugin, written over its file, taken
/// up by `setPolicy` without a restart; broken builds refused with the running version kept.
@Suite("Plugin upgrades")
struct PluginUpgradeTests {
    /// A plugin that always picks backend ANSWER; MAJOR and FAIL_CREATE make broken builds.
    static let source = """
        #include <string.h>
        #include "l4lb_policy.h"
        #ifndef MAJOR
        #define MAJOR L4LB_POLICY_ABI_MAJOR
        #endif
        static int marker;
        static void *make(const char *c, size_t n, char *error, size_t capacity) {
        #ifdef FAIL_CREATE
            strncpy(error, "this build refuses every configuration", capacity - 1);
            return NULL;
        #else
            return &marker;
        #endif
        }
        static void destroy(void *i) {}
        static int64_t pick(void *i, const l4lb_address *a, const l4lb_backend *b, size_t n) {
            return ANSWER < n && b[ANSWER].healthy ? ANSWER : L4LB_PICK_NONE;
        }
        int l4lb_policy_entry(l4lb_policy_descriptor *d, size_t size) {
            if (size < L4LB_POLICY_DESCRIPTOR_SIZE_1_0) return 1;
            d->abi_major = MAJOR; d->abi_minor = 0; d->struct_size = L4LB_POLICY_DESCRIPTOR_SIZE_1_0;
            d->name = "versioned";
            d->instance_new = make; d->instance_destroy = destroy; d->pick = pick;
            return 0;
        }
        """

    /// Builds the fixture with `defines` into `directory/name`; the file's SHA-256.
    static func build(_ directory: String, _ name: String, _ defines: [String]) throws -> String {
        #expect(
            try PluginFixtures.compilePlugin("\(directory)/versioned.c", to: "\(directory)/\(name)", defines: defines)
                == 0
        )
        return SHA256.hex(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)")))
    }

    @Test(
        "new builds are taken up by setPolicy without a restart; a refused ABI or a failing create keeps the running version"
    )
    func upgradeInPlace() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let directory = try PluginFixtures.makeDirectory()
            r.onStop { try? FileManager.default.removeItem(atPath: directory) }
            let staging = try PluginFixtures.makeDirectory()
            r.onStop { try? FileManager.default.removeItem(atPath: staging) }
            try Data(Self.source.utf8).write(to: URL(fileURLWithPath: "\(staging)/versioned.c"))
            let first = try Self.build(staging, "v1.so", ["ANSWER=0"])
            try FileManager.default.copyItem(atPath: "\(staging)/v1.so", toPath: "\(directory)/versioned.so")

            let log = CapturedLog()
            let backends = try await r.greeters(["a", "b", "c"])
            let proxy = try await r.l4lb(
                backends: backends.map(\.spec),
                redis: redis,
                ["--plugin-dir", directory, "--policy", "versioned", "--admin", "127.0.0.1:0"],
                logger: log.logger()
            )
            let admin = try #require(proxy.adminAddress?.port)
            func versions() throws -> [InstanceStatus.PluginVersionEntry] {
                let status = try JSONDecoder().decode(
                    InstanceStatus.Document.self,
                    from: Data(try httpGet(port: admin, path: "/status").body.utf8)
                )
                return status.plugins?.first { $0.name == "versioned" }?.versions ?? []
            }
            #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            #expect(try versions().map(\.sha256) == [first])

            // Version 2, renamed over the file as an installer does; the same setPolicy takes it up.
            let second = try Self.build(staging, "v2.so", ["ANSWER=1"])
            #expect(rename("\(staging)/v2.so", "\(directory)/versioned.so") == 0)
            let client = try redis.client()
            try client.publish("setPolicy", "versioned")
            #expect(await eventually { (try? BlockingClient.greeting(port: proxy.port)) == "b" })
            #expect(try versions().map(\.sha256) == [first, second])
            #expect(try versions().map(\.current) == [false, true])
            #expect(try versions().allSatisfy { $0.abi == "1.0" })
            #expect(log.lines.contains { $0.message.hasPrefix("plugin upgraded") && $0.metadata["sha256"] == second })
            // `l4lb plugins --admin` shows what the running l4lb has loaded.
            let listing = try L4LBProcess(arguments: ["plugins", "--admin", "127.0.0.1:\(admin)"])
            #expect(await listing.waitForExit(timeoutSeconds: 10) == 0)
            #expect(listing.text.contains("versioned\t\(directory)/versioned.so"), "\(listing.text)")
            #expect(listing.text.contains("  sha256 \(first.prefix(16))\tABI 1.0\tloaded "), "\(listing.text)")
            #expect(listing.text.contains("  sha256 \(second.prefix(16))\tABI 1.0\tloaded "), "\(listing.text)")
            let lines = listing.text.split(separator: "\n")
            #expect(lines.first { $0.contains(second.prefix(16)) }?.hasSuffix("\tcurrent") == true, "\(listing.text)")
            #expect(lines.first { $0.contains(first.prefix(16)) }?.hasSuffix("\tcurrent") == false, "\(listing.text)")

            // A build for another ABI major, written in place over the loaded file: refused, and l4lb,
            // which runs a private copy, keeps serving with version 2.
            let foreign = try Self.build(staging, "v3.so", ["ANSWER=2", "MAJOR=2"])
            try Data(contentsOf: URL(fileURLWithPath: "\(staging)/v3.so")).write(
                to: URL(fileURLWithPath: "\(directory)/versioned.so")
            )
            try client.publish("setPolicy", "versioned")
            #expect(
                await eventually {
                    log.lines.contains {
                        $0.message.hasPrefix("refused the new version of plugin versioned")
                            && $0.message.contains("built for plugin ABI 2.0") && $0.metadata["sha256"] == foreign
                    }
                }
            )
            #expect(try BlockingClient.greeting(port: proxy.port) == "b")

            // A build whose create fails: the setPolicy is refused and version 2 stays in use.
            let failing = try Self.build(staging, "v4.so", ["ANSWER=2", "FAIL_CREATE"])
            #expect(rename("\(staging)/v4.so", "\(directory)/versioned.so") == 0)
            let refusedBefore = proxy.controlPlane?.statistics.refusedMessages ?? 0
            try client.publish("setPolicy", "versioned")
            #expect(await eventually { (proxy.controlPlane?.statistics.refusedMessages ?? 0) == refusedBefore + 1 })
            #expect(
                log.lines.contains {
                    $0.message.contains("new version \(failing.prefix(12)) of plugin versioned")
                        && $0.message.contains("this build refuses every configuration")
                        && $0.message.contains("version \(second.prefix(12)) stays in use")
                }
            )
            #expect(try BlockingClient.greeting(port: proxy.port) == "b")
            #expect(try versions().filter(\.current).map(\.sha256) == [second])

            // Rolling the file back to version 1 adopts the version already loaded: nothing new loads.
            try FileManager.default.removeItem(atPath: "\(directory)/versioned.so")
            try FileManager.default.copyItem(atPath: "\(staging)/v1.so", toPath: "\(directory)/versioned.so")
            try client.publish("setPolicy", "versioned")
            #expect(await eventually { (try? BlockingClient.greeting(port: proxy.port)) == "a" })
            #expect(try Set(versions().map(\.sha256)) == [first, second, failing])
            #expect(try versions().filter(\.current).map(\.sha256) == [first])
        }
    }
}
