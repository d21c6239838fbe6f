import CLBPolicy
import Foundation
import LBKit
import Logging
import Policies
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Plugin ABI 1.3: a pick reads the live pool (`pick_pool`) instead of a copy of every backend.
@Suite("Plugin ABI 1.3: picks from the live pool")
struct LivePoolPluginTests {
    /// A C plugin that picks the least-loaded healthy backend through the live pool's functions, and
    /// answers an index out of range (a fault l4lb counts) when anything the ABI promises does not
    /// hold: the array is the one pool_changed was given, out-of-range reads are harmless, and its
    /// plain `pick` is never called.
    static let source = """
        #include "l4lb_policy.h"
        static const l4lb_backend *announced;
        static int marker;
        static void *make(const char *c, size_t n, char *e, size_t cap) { return &marker; }
        static void destroy(void *i) {}
        static int64_t pick(void *i, const l4lb_address *a, const l4lb_backend *b, size_t n) { return 999; }
        static void changed(void *i, const l4lb_backend *b, size_t n) { announced = b; }
        static int64_t pick_pool(void *i, const l4lb_address *a, const l4lb_pool *pool) {
            if (pool->struct_size < sizeof(l4lb_pool) || pool->backends != announced) return 1000;
            if (pool->active_connections(pool, pool->count) != 0 || pool->healthy(pool, pool->count)) return 1001;
            int64_t best = L4LB_PICK_NONE;
            uint64_t least = 0;
            for (size_t k = 0; k < pool->count; k++) {
                if (!pool->healthy(pool, k)) continue;
                uint64_t load = pool->active_connections(pool, k);
                if (best < 0 || load < least) { best = (int64_t)k; least = load; }
            }
            return best;
        }
        int l4lb_policy_entry(l4lb_policy_descriptor *d, size_t size) {
            if (!L4LB_POLICY_HAS_PICK_POOL(size)) return 1;
            d->abi_major = L4LB_POLICY_ABI_MAJOR; d->abi_minor = L4LB_POLICY_ABI_MINOR;
            d->struct_size = sizeof(*d);
            d->name = "live-least";
            d->instance_new = make; d->instance_destroy = destroy; d->pick = pick;
            d->pool_changed = changed; d->pick_pool = pick_pool;
            return 0;
        }
        """

    private static func backends(_ count: Int) -> [BackendSpec] {
        (1...count).map { BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 9000 + $0)) }
    }

    @Test("a C plugin reads live loads and eligibility, on the array pool_changed saw, across pool changes")
    func livePoolPicks() throws {
        let directory = try PluginFixtures.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(Self.source.utf8).write(to: URL(fileURLWithPath: "\(directory)/live.c"))
        #expect(try PluginFixtures.compilePlugin("\(directory)/live.c", to: "\(directory)/live.so") == 0)
        let library = try PluginLibrary.load(path: "\(directory)/live.so")
        #expect(library.picksFromLivePool && library.abiMinor == 3)
        let faults = PluginFaults(logger: Logger(label: "test"))
        let policy = try PluginPolicy(
            plugin: library,
            spec: PolicySpec(name: library.name),
            fallback: RoundRobinPolicy(),
            faults: faults
        )
        let router = Router(policy: policy)
        try router.setPool(Self.backends(3))
        func pick(excluding excluded: BackendExclusions = .none) -> Int? {
            router.table.selector.pick(for: ClientAddress(text: "192.0.2.1")!, excluding: excluded)
        }
        #expect(pick() == 0)
        // Loads move under the plugin, between picks, with no pool change: it sees them.
        for _ in 0..<2 { router.pool[0].counters.connectionStarted() }
        router.pool[1].counters.connectionStarted()
        #expect(pick() == 2)
        var excluded = BackendExclusions()
        excluded.insert(2)
        #expect(pick(excluding: excluded) == 1, "an excluded backend reads as not healthy")
        excluded.insert(1)
        excluded.insert(0)
        #expect(pick(excluding: excluded) == nil)

        // A new pool: the plugin is told of it, and picks run on that very array.
        try router.setPool(Self.backends(5))
        router.pool[4].counters.connectionStarted()
        for index in 0..<4 {
            for _ in 0..<3 { router.pool[index].counters.connectionStarted() }
        }
        #expect(pick() == 4)
        #expect(faults.total == 0, "the plugin saw a broken promise (or its plain pick was called)")
    }

    @Test("this package's plugins set pick_pool only when the host's descriptor has room for it")
    func sdkPluginsSetPickPoolByDescriptorSize() throws {
        let pickPoolEnd =
            MemoryLayout<l4lb_policy_descriptor>.offset(of: \.pick_pool)! + MemoryLayout<UnsafeRawPointer?>.size
        let explainEnd =
            MemoryLayout<l4lb_policy_descriptor>.offset(of: \.explain)! + MemoryLayout<UnsafeRawPointer?>.size
        let handle = try #require(dlopen(PluginFixtures.library("l4lb-policy-geo"), RTLD_NOW | RTLD_LOCAL))
        let entry = unsafeBitCast(try #require(dlsym(handle, "l4lb_policy_entry")), to: l4lb_policy_entry_fn.self)
        var older = l4lb_policy_descriptor()
        #expect(entry(&older, explainEnd) == 0)
        #expect(older.explain != nil && older.pick_pool == nil, "geo wrote pick_pool past a 1.2 descriptor")
        var current = l4lb_policy_descriptor()
        #expect(entry(&current, pickPoolEnd) == 0)
        #expect(current.pick_pool != nil && current.abi_minor == 3)
    }
}
