import Foundation
import LBKit
import Testing

@testable import LBControlPlane
@testable import l4lb

/// Several instances on one Redis, seen as a fleet: versions beside serverPool, status keys, and
/// `l4lb ctl instances` telling who runs another pool; a serverPool written directly is noticed.
@Suite("The fleet")
struct FleetTests {
    /// `l4lb ctl instances`, through the binary; the row of each instance by its id.
    static func instances(_ redis: RedisServer) async throws -> (text: String, rows: [String: String]) {
        let process = try L4LBProcess(arguments: ["ctl", "instances", "--redis", redis.url])
        #expect(await process.waitForExit(timeoutSeconds: 10) == 0)
        var rows: [String: String] = [:]
        for line in process.text.split(separator: "\n") {
            if let id = line.split(separator: " ").first, id.hasPrefix("fleet-") { rows[String(id)] = String(line) }
        }
        return (process.text, rows)
    }

    @Test("three instances: one stops, the pool changes, it restarts; ctl instances shows it differ, then catch up")
    func catchingUp() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b"])
            let ids = ["fleet-1", "fleet-2", "fleet-3"]
            var instances: [Application] = []
            for id in ids {
                // The third one's status key outlives it long enough to be seen stale: a crashed
                // instance's stays for three intervals (15 s by default).
                instances.append(
                    try await r.l4lb(backends: [backends[0].spec], redis: redis, ["--instance-id", id]) {
                        if id == "fleet-3" { $0.controlPlane?.statusTimeToLive = .seconds(60) }
                    }
                )
            }
            let client = try redis.client()
            var fleet = try await Self.instances(redis)
            #expect(
                await eventually {
                    fleet = (try? await Self.instances(redis)) ?? fleet
                    return fleet.rows.count == 3 && fleet.rows.values.allSatisfy { $0.contains("v1 agrees") }
                },
                "got: \(fleet.text)"
            )

            // The third stops; its status key outlives it for a while, with the old pool.
            await instances[2].stop()
            try client.publish("addServer", backends[1].spec.description)
            for instance in instances.prefix(2) {
                #expect(await eventually { instance.poolPorts == [backends[0].port, backends[1].port] })
            }
            #expect(await eventually { (try? client.command(["HGET", "serverPool:meta", "version"]))?.text == "2" })
            #expect(
                await eventually {
                    fleet = (try? await Self.instances(redis)) ?? fleet
                    return fleet.rows["fleet-1"]?.contains("v2 agrees") == true
                        && fleet.rows["fleet-2"]?.contains("v2 agrees") == true
                },
                "got: \(fleet.text)"
            )
            #expect(fleet.rows["fleet-3"]?.contains("v1 DIFFERS for") == true, "got: \(fleet.text)")
            #expect(fleet.text.contains("serverPool: 2 backends, version 2"))
            #expect(fleet.text.contains("3 instances live, 1 with another pool"))

            // It comes back under the same name and reads the key: the fleet agrees again.
            _ = try await r.l4lb(backends: [backends[0].spec], redis: redis, ["--instance-id", "fleet-3"])
            #expect(
                await eventually {
                    fleet = (try? await Self.instances(redis)) ?? fleet
                    return fleet.rows.count == 3 && fleet.rows.values.allSatisfy { $0.contains("v2 agrees") }
                },
                "got: \(fleet.text)"
            )
            #expect(fleet.text.contains("3 instances live, 0 with another pool"))
        }
    }

    @Test(
        "a serverPool written directly: noticed through reloadPool, or through keyspace notifications when on; a bad one changes nothing"
    )
    func directWrites() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b", "c"])
            let proxy = try await r.l4lb(backends: [backends[0].spec], redis: redis)
            let controlPlane = try #require(proxy.controlPlane)
            let client = try redis.client()

            // Notifications off (the default): a SET alone is not seen, reloadPool makes it seen.
            try client.command(["SET", "serverPool", "[\"127.0.0.1:\(backends[1].port)\"]"])
            let process = try L4LBProcess(arguments: ["ctl", "reload-pool", "--redis", redis.url])
            #expect(await process.waitForExit(timeoutSeconds: 10) == 0)
            #expect(await eventually { proxy.poolPorts == [backends[1].port] })

            // Notifications on: the SET is enough.
            try client.command(["CONFIG", "SET", "notify-keyspace-events", "K$"])
            try client.command(["SET", "serverPool", "[\"127.0.0.1:\(backends[2].port)\"]"])
            #expect(await eventually { proxy.poolPorts == [backends[2].port] })

            // A key that does not parse is refused, and the pool stays.
            let refusedBefore = controlPlane.statistics.refusedMessages
            try client.command(["SET", "serverPool", "[\"127.0.0.1:0\""])
            #expect(await eventually { controlPlane.statistics.refusedMessages == refusedBefore + 1 })
            #expect(proxy.poolPorts == [backends[2].port])
            #expect(try BlockingClient.greeting(port: proxy.port) == "c")
        }
    }

    @Test("the pool script: N instances running one change write once; a direct SET in between is not skipped")
    func poolScript() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let client = try redis.client()
            let a = BackendSpec(address: HostAndPort(host: "10.0.0.1", port: 80))
            let b = BackendSpec(address: HostAndPort(host: "10.0.0.2", port: 80))
            let c = BackendSpec(address: HostAndPort(host: "10.0.0.3", port: 80))
            func run(resulting pool: [BackendSpec], _ changes: [String]) throws -> RedisReply {
                try client.command(
                    [
                        "EVAL", PoolUpdateScript.source, "2", "serverPool", "serverPool:meta",
                        PoolDocument.encode(pool),
                        PoolFingerprint.of(pool),
                    ] + changes
                )
            }
            try client.command(["SET", "serverPool", PoolDocument.encode([a])])
            let addB = ["add", b.address.description, PoolDocument.encodeEntry(b)]
            #expect(try run(resulting: [a, b], addB) == .integer(1))
            // The other instances: the key is already as they would make it.
            for _ in 0..<3 { #expect(try run(resulting: [a, b], addB) == .integer(1)) }
            #expect(try client.pool() == [a, b])
            // An operator's SET changes the text: the next run is not skipped, and applies on top.
            try client.command(["SET", "serverPool", PoolDocument.encode([c])])
            #expect(try run(resulting: [a, b], addB) == .integer(2))
            #expect(try client.pool() == [c, b])
        }
    }

    @Test("the status key carries the pool's fingerprint and version, the retired backends and the last contact")
    func statusKey() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backend = try await r.backend(.greet("a"))
            let dead = PortReservation()
            let proxy = try await r.l4lb(
                backends: [backend.spec, dead.spec],
                redis: redis,
                ["--instance-id", "fleet-s"]
            )
            // Round-robin sends one of these to the dead backend: refused, it is retired.
            for _ in 0..<2 { #expect(try BlockingClient.greeting(port: proxy.port) == "a") }
            let client = try redis.client()
            var document: InstanceStatus.Document?
            #expect(
                await eventually {
                    document = (try? client.command(["GET", "status:fleet-s"]).text).flatMap {
                        try? JSONDecoder().decode(InstanceStatus.Document.self, from: Data($0.utf8))
                    }
                    return document?.retired == [dead.spec.address.description]
                }
            )
            let status = try #require(document)
            #expect(status.poolFingerprint == PoolFingerprint.of([backend.spec, dead.spec]))
            #expect(status.poolVersion == 1)
            #expect(status.redisConnected == true)
            let contact = try #require(status.redisLastContact.flatMap(Timestamp.parse))
            #expect(abs(contact.timeIntervalSinceNow) < 60)
            withExtendedLifetime(dead) {}
        }
    }
}
