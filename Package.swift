// swift-tools-version:6.1
import Foundation
import PackageDescription

let package = Package(
    name: "l4lb",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "l4lb", targets: ["l4lb"]),
        .library(name: "LBKit", targets: ["LBKit"]),
        .library(name: "LBControlPlane", targets: ["LBControlPlane"]),
        .library(name: "LBOperations", targets: ["LBOperations"]),
        .library(name: "Policies", targets: ["Policies"]),
        // For plugin authors: a policy in Swift without the C ABI's pointers (docs/plugins.md).
        .library(name: "L4LBPluginSDK", targets: ["L4LBPluginSDK"]),
        // Policy plugins, loaded by l4lb with dlopen. `swift build` builds them; `--product l4lb` does not.
        .library(name: "l4lb-policy-geo", type: .dynamic, targets: ["GeoPolicy"]),
        .library(name: "l4lb-policy-source-hash", type: .dynamic, targets: ["SourceHashPolicy"]),
        // One tiny plugin per failure mode, for the tests: each must be refused.
        .library(name: "l4lb-fixture-bad-abi", type: .dynamic, targets: ["BadABIFixture"]),
        .library(name: "l4lb-fixture-no-entry", type: .dynamic, targets: ["NoEntryFixture"]),
        .library(name: "l4lb-fixture-create-fails", type: .dynamic, targets: ["CreateFailsFixture"]),
        .library(name: "l4lb-fixture-bad-index", type: .dynamic, targets: ["BadIndexFixture"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // The C ABI of policy plugins: one header, include/l4lb_policy.h.
        .target(name: "CLBPolicy"),
        // Linux calls that Swift's Glibc module leaves out: epoll, eventfd, accept4, spawn actions, pidfd.
        .target(name: "CLinux"),
        // SHA-256 in C: l4lb hashes each plugin it loads, and unoptimized Swift was too slow at it.
        .target(name: "CSHA256"),
        // libmaxminddb, for the geo-routing plugin.
        .systemLibrary(
            name: "CMaxMindDB",
            providers: [.apt(["libmaxminddb-dev"])]
        ),
        // hiredis, the Redis client library of the control plane. Its header sits on the default include
        // path (/usr/include/hiredis); no pkgConfig because Debian's hiredis.pc adds -D_FILE_OFFSET_BITS=64,
        // which SwiftPM refuses with a warning on every build.
        .systemLibrary(
            name: "CHiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // The proxy core: backends, the policy interface, plugins, the data plane, health and
        // configuration. It links no Redis, no HTTP and no metrics library (ExternalPackageTests
        // builds a package that depends on it alone, without hiredis's headers).
        .target(
            name: "LBKit",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                "CLBPolicy",
                "CLinux",
                "CSHA256",
            ],
            // Release builds skip Swift's dynamic exclusivity checks in the core: the relay loop's
            // state (its slab, its timer lists) is a class's stored properties, confined to one thread,
            // and every access to them paid a check (swift_beginAccess and a thread-local access set,
            // about 2% of a relay thread's samples under new connections). An interleaved A/B of 8
            // pairs, wrk Connection: close: 0.95x the CPU per new connection, 1.01x connections/s.
            // Debug builds, which the tests run, keep the checks.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        // The control plane: the pool and the policy through Redis pub/sub and keys, with hiredis.
        .target(
            name: "LBControlPlane",
            dependencies: [
                "LBKit",
                "CHiredis",
                "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // What operators watch: the admin HTTP endpoint, Prometheus metrics, the access log and the
        // event log's format.
        .target(
            name: "LBOperations",
            dependencies: [
                "LBKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        // The Swift plugin SDK: a protocol to conform to and one line to export it; it does the
        // descriptor, the strings, the addresses and the log. Depends on the ABI's header alone.
        .target(
            name: "L4LBPluginSDK",
            dependencies: ["CLBPolicy"]
        ),
        // Geo routing: maps client addresses to countries and continents with MaxMind databases.
        // Written on the SDK.
        .target(
            name: "GeoPolicy",
            dependencies: ["L4LBPluginSDK", "CMaxMindDB"],
            path: "Plugins/GeoPolicy"
        ),
        // An example plugin in plain C: source-address hashing.
        .target(
            name: "SourceHashPolicy",
            dependencies: ["CLBPolicy"],
            path: "Plugins/SourceHashPolicy",
            publicHeadersPath: "."
        ),
        .target(
            name: "BadABIFixture",
            dependencies: ["CLBPolicy"],
            path: "Plugins/Fixtures/BadABI",
            publicHeadersPath: "."
        ),
        .target(
            name: "NoEntryFixture",
            dependencies: ["CLBPolicy"],
            path: "Plugins/Fixtures/NoEntry",
            publicHeadersPath: "."
        ),
        .target(
            name: "CreateFailsFixture",
            dependencies: ["CLBPolicy"],
            path: "Plugins/Fixtures/CreateFails",
            publicHeadersPath: "."
        ),
        .target(
            name: "BadIndexFixture",
            dependencies: ["CLBPolicy"],
            path: "Plugins/Fixtures/BadIndex",
            publicHeadersPath: "."
        ),
        // Built-in policies, one file each.
        .target(
            name: "Policies",
            dependencies: [
                "LBKit",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The executable: argument parsing, the daemon, the pid file, systemd, and the wiring
        // (`buildApplication`), which the integration tests call too.
        .executableTarget(
            name: "l4lb",
            dependencies: [
                "LBKit",
                "LBControlPlane",
                "LBOperations",
                "Policies",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The seeded mutation fuzzer that the parser tests of every module share.
        .target(
            name: "FuzzSupport",
            path: "Tests/FuzzSupport"
        ),
        .testTarget(
            name: "LBKitTests",
            dependencies: [
                "LBKit",
                "CLinux",
                // The relay simulation routes with the real policies.
                "Policies",
                "FuzzSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        // The control plane's decisions and the operations code, without Redis or a network:
        // pure types and NIO's EmbeddedChannel.
        .testTarget(
            name: "LBControlPlaneTests",
            dependencies: ["LBKit", "LBControlPlane", "FuzzSupport"]
        ),
        .testTarget(
            name: "LBOperationsTests",
            dependencies: [
                "LBKit",
                "LBOperations",
                "FuzzSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "PoliciesTests",
            dependencies: ["LBKit", "Policies", "FuzzSupport"]
        ),
        // End-to-end tests: real sockets on 127.0.0.1, the real wiring, and the l4lb binary itself.
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "CLBPolicy",
                "CLinux",
                "LBKit",
                "LBControlPlane",
                "LBOperations",
                "Policies",
                "l4lb",
                "FuzzSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// The pick benchmarks (scripts/bench-picks) are built only when L4LB_BENCHMARKS is set, so that a
// plain build and CI neither fetch nor build the benchmark harness.
if ProcessInfo.processInfo.environment["L4LB_BENCHMARKS"] != nil {
    package.dependencies.append(
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"])
    )
    package.targets.append(
        .executableTarget(
            name: "PickBenchmarks",
            dependencies: [
                "LBKit",
                "Policies",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/PickBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    )
    // A day of pool changes across a fleet, with l4lb's maglev (scripts/simulate-fleet).
    package.targets.append(
        .executableTarget(
            name: "FleetSimulation",
            dependencies: ["LBKit", "Policies"],
            path: "Benchmarks/FleetSimulation"
        )
    )
}
