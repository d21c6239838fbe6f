import Benchmark
import Foundation
import LBKit
import Logging
import Policies

/// One pick of each policy over pools of 10, 100 and 1,000 backends: round-robin, least-connections
/// and maglev (built in), source-hash (the C example plugin) and geo (the Swift plugin, a
/// MaxMind lookup included), the plugins loaded from their .so files as l4lb loads them.
///
/// Run with scripts/bench-picks, which builds the plugins and points L4LB_PLUGIN_DIR at them.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 1_000,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )
    let plugins = PickFixtures.pluginRegistry()
    for size in [10, 100, 1_000] {
        for spec in PickFixtures.specs {
            // Built once, outside the measured closure, so that every sample runs on warm caches (a
            // pool built per sample makes the first touch of each backend a cache miss).
            guard let policy = try? plugins.makePolicy(spec),
                let router = try? PickFixtures.router(size: size, policy: policy)
            else {
                print("cannot build the \(spec.name) policy: is L4LB_PLUGIN_DIR set (scripts/bench-picks)?")
                continue
            }
            // The pick alone: what the issue's bound is about.
            Benchmark("\(spec.name) pick, \(size) backends") { benchmark in
                let selector = router.table.selector
                let clients = PickFixtures.clients
                benchmark.startMeasurement()
                for iteration in benchmark.scaledIterations {
                    blackHole(selector.pick(for: clients[iteration & (clients.count - 1)], excluding: .none))
                }
            }
            // A pick with the connection's open and close as the data plane reports them (counters
            // and policy hooks), so that least-connections' re-sorting on close is in the figure.
            Benchmark("\(spec.name) pick+open+close, \(size) backends") { benchmark in
                let selector = router.table.selector
                let pool = router.pool
                let policy = router.policy
                let clients = PickFixtures.clients
                benchmark.startMeasurement()
                for iteration in benchmark.scaledIterations {
                    let index = selector.pick(for: clients[iteration & (clients.count - 1)], excluding: .none)!
                    pool[index].counters.connectionStarted()
                    policy.connectionOpened(to: pool[index])
                    pool[index].counters.connectionEnded()
                    policy.connectionClosed(to: pool[index])
                }
            }
        }
    }
    // The shadow policy's cost on the relay thread: a round-robin pick alone, then with a shadow
    // asked about every client (100%) or one in ten, as the relay does after the active pick.
    for (shadowSpec, percent) in [
        (PolicySpec(name: "maglev"), 100), (PickFixtures.specs[4], 100), (PickFixtures.specs[4], 10),
    ] {
        guard let active = try? plugins.makePolicy(PolicySpec(name: "round-robin")),
            let shadow = try? plugins.makePolicy(shadowSpec),
            let router = try? PickFixtures.router(size: 100, policy: active)
        else { continue }
        router.setShadow(
            ShadowPolicy(spec: shadowSpec, policy: shadow, samplePercent: percent, logger: Logger(label: "bench"))
        )
        Benchmark("round-robin pick + \(shadowSpec.name) shadow at \(percent)%, 100 backends") { benchmark in
            let table = router.table
            let clients = PickFixtures.clients
            benchmark.startMeasurement()
            for iteration in benchmark.scaledIterations {
                let client = clients[iteration & (clients.count - 1)]
                let index = table.selector.pick(for: client, excluding: .none)!
                table.shadow?.observe(client, active: index, excluding: .none)
                blackHole(index)
            }
        }
    }
}

enum PickFixtures {
    static let specs: [PolicySpec] = {
        let database =
            ProcessInfo.processInfo.environment["L4LB_GEO_DATABASE"] ?? "Tests/Fixtures/maxmind/GeoIP2-City-Test.mmdb"
        return [
            PolicySpec(name: "round-robin"),
            PolicySpec(name: "least-connections"),
            PolicySpec(name: "maglev"),
            PolicySpec(name: "source-hash"),
            PolicySpec(
                name: "geo",
                configuration:
                    #"{"database": "\#(database)", "regions": {"eu": ["GB", "SE", "EU"]}, "fallback": ["us"]}"#
            ),
        ]
    }()

    /// Clients in the test database's ranges (GB, SE, US, JP, and one it does not know), 8 of them so
    /// that the index is a mask.
    static let clients: [ClientAddress] = [
        [81, 2, 69, 142], [89, 160, 20, 112], [216, 160, 83, 56], [2, 125, 160, 216],
        [175, 16, 199, 1], [81, 2, 69, 160], [10, 0, 0, 1], [89, 160, 20, 128],
    ].map { ClientAddress(family: .ipv4, bytes: $0, port: 40_000) }

    /// Backends 10.0.x.y:80, half in region "eu", half in "us", weights 1 to 4.
    static func router(size: Int, policy: any LoadBalancingPolicy) throws -> Router {
        let router = Router(policy: policy)
        try router.setPool(
            (0..<size).map { index in
                BackendSpec(
                    address: HostAndPort(host: "10.0.\(index / 250).\(index % 250 + 1)", port: 80),
                    weight: index % 4 + 1,
                    region: index % 2 == 0 ? "eu" : "us"
                )
            }
        )
        return router
    }

    /// Built-in policies plus the plugins in L4LB_PLUGIN_DIR.
    static func pluginRegistry() -> PolicyRegistry {
        var logger = Logger(label: "bench")
        logger.logLevel = .critical
        let registry = BuiltinPolicies.makeRegistry()
        let catalog = PluginCatalog(
            directories: [],
            defaultDirectory: ProcessInfo.processInfo.environment["L4LB_PLUGIN_DIR"],
            reservedNames: Set(BuiltinPolicies.names)
        )
        catalog.register(in: registry, faults: PluginFaults(logger: logger), logger: logger) { RoundRobinPolicy() }
        return registry
    }
}
