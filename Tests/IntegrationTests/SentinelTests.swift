import Foundation
import LBControlPlane
import LBKit
import NIOConcurrencyHelpers
import Testing

@testable import l4lb

/// The control plane on Redis Sentinel: a master, a replica and three sentinels, all real
/// redis-server processes on 127.0.0.1 started and stopped by PID, with passwords on every one.
@Suite("Redis Sentinel")
struct SentinelTests {
    static let password = "s3cret-\(UInt32.random(in: 0...UInt32.max))"

    /// A master, its replica (in sync), and three sentinels that see both and each other.
    static func cluster(_ r: TestResources) async throws -> (master: RedisServer, replica: RedisServer, url: String) {
        let auth = ["--requirepass", Self.password, "--masterauth", Self.password]
        let master = try await RedisServer(arguments: auth, password: Self.password)
        r.onStop { master.kill() }
        let replica = try await RedisServer(
            arguments: auth + ["--replicaof", "127.0.0.1", "\(master.port)"],
            password: Self.password
        )
        r.onStop { replica.kill() }
        let replicaClient = try replica.client()
        #expect(
            await eventually(timeoutSeconds: 10) {
                (try? replicaClient.command(["INFO", "replication"]).text)?.contains("master_link_status:up") == true
            },
            "the replica did not sync"
        )
        var sentinels: [RedisServer] = []
        for _ in 0..<3 {
            let sentinel = try await RedisServer(
                sentinelConfiguration: [
                    "sentinel monitor mymaster 127.0.0.1 \(master.port) 2",
                    "sentinel down-after-milliseconds mymaster 400",
                    "sentinel failover-timeout mymaster 3000",
                    "sentinel auth-pass mymaster \(Self.password)",
                    "requirepass \(Self.password)",
                    "sentinel sentinel-pass \(Self.password)",
                ],
                password: Self.password
            )
            r.onStop { sentinel.kill() }
            sentinels.append(sentinel)
        }
        // A failover needs the sentinels to know the replica and to have found each other.
        for sentinel in sentinels {
            let client = try sentinel.client()
            #expect(
                await eventually(timeoutSeconds: 15) {
                    guard case .array(let replicas) = try? client.command(["SENTINEL", "replicas", "mymaster"]),
                        case .array(let peers) = try? client.command(["SENTINEL", "sentinels", "mymaster"])
                    else { return false }
                    return replicas.count == 1 && peers.count == 2
                },
                "sentinel on \(sentinel.port) did not discover the cluster"
            )
        }
        let url = "redis+sentinel://" + sentinels.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") + "/mymaster"
        return (master, replica, url)
    }

    @Test(
        "the master dies under traffic: both instances follow the failover, a later addServer reaches both, and no client fails"
    )
    func failover() async throws {
        try await withTestResources { r in
            let (master, replica, url) = try await Self.cluster(r)
            let directory = try PluginFixtures.makeDirectory()
            r.onStop { try? FileManager.default.removeItem(atPath: directory) }
            let passwordFile = "\(directory)/redis-password"
            try Self.password.write(toFile: passwordFile, atomically: true, encoding: .utf8)

            let backends = try await r.greeters(["a", "b", "c"])
            var instances: [Application] = []
            for _ in 0..<2 {
                instances.append(
                    try await r.l4lb(
                        backends: [backends[0].spec, backends[1].spec],
                        ["--redis", url, "--redis-password-file", passwordFile]
                    ) { settings in
                        settings.controlPlane?.commandTimeout = .seconds(1)
                        settings.controlPlane?.initialReconnectDelay = .milliseconds(50)
                        settings.controlPlane?.maximumReconnectDelay = .milliseconds(400)
                    }
                )
            }
            for instance in instances {
                #expect(instance.controlPlane?.statistics.isConnected == true)
            }
            // The pool l4lb seeded reached the replica before the master dies.
            let replicaClient = try replica.client()
            #expect(await eventually { (try? replicaClient.pool())?.count == 2 })

            // Clients through both instances the whole time.
            let failures = NIOLockedValueBox<[String]>([])
            let served = NIOLockedValueBox(0)
            let stop = NIOLockedValueBox(false)
            let finished = NIOLockedValueBox(false)
            let ports = instances.map(\.port)
            let traffic = Thread {
                for index in 0..<20_000 where !stop.withLockedValue({ $0 }) {
                    do {
                        _ = try BlockingClient.greeting(port: ports[index % 2])
                        served.withLockedValue { $0 += 1 }
                    } catch {
                        failures.withLockedValue { $0.append("\(error)") }
                    }
                }
                finished.withLockedValue { $0 = true }
            }
            traffic.start()

            let connectsBefore = instances.map { $0.controlPlane?.statistics.connectCount ?? 0 }
            let killedAt = ContinuousClock.now
            master.kill()
            #expect(
                await eventually(timeoutSeconds: 20) {
                    zip(instances, connectsBefore).allSatisfy { instance, before in
                        let statistics = instance.controlPlane?.statistics
                        return (statistics?.connectCount ?? 0) > before && statistics?.isConnected == true
                    }
                },
                "the instances did not reconnect after the failover"
            )
            let blind = ContinuousClock.now - killedAt
            print("Sentinel failover: the control plane was blind for \(blind) after the master was killed")

            // The new master is the old replica, and it takes a pool change for both instances.
            let (client, newMaster) = try RedisConnection.open(
                try RedisEndpoint(parsing: url.replacingOccurrences(of: "://", with: "://:\(Self.password)@")),
                timeout: .seconds(2)
            )
            #expect(newMaster.description.contains(":\(replica.port)"))
            try client.publish("addServer", backends[2].spec.description)
            for instance in instances {
                #expect(await eventually { instance.poolPorts.contains(backends[2].port) })
            }
            let before = served.withLockedValue { $0 }
            #expect(await eventually { served.withLockedValue { $0 } > before + 20 })
            stop.withLockedValue { $0 = true }
            #expect(await eventually { finished.withLockedValue { $0 } })
            #expect(failures.withLockedValue { $0 }.isEmpty, "\(failures.withLockedValue { $0.prefix(3) })")
        }
    }

    @Test("a manual failover demotes a master that stays up: +switch-master moves both instances to the new one")
    func manualFailover() async throws {
        try await withTestResources { r in
            let (master, replica, url) = try await Self.cluster(r)
            let sentinelURL = url.replacingOccurrences(of: "://", with: "://:\(Self.password)@")
            var instances: [Application] = []
            let logs = [CapturedLog(), CapturedLog()]
            for log in logs {
                instances.append(try await r.l4lb(["--redis", sentinelURL], logger: log.logger()))
            }
            for instance in instances {
                #expect(await eventually { instance.controlPlane?.isFollowingSentinel == true })
            }
            let connectsBefore = instances.map { $0.controlPlane?.statistics.connectCount ?? 0 }
            guard case .sentinel(let sentinels, _) = try RedisEndpoint(parsing: url).transport else { return }
            let sentinel = try RedisConnection(
                RedisEndpoint(transport: .tcp(host: "127.0.0.1", port: sentinels[0].port), password: Self.password)
            )
            #expect(try sentinel.command(["SENTINEL", "failover", "mymaster"]) == .status("OK"))
            #expect(
                await eventually(timeoutSeconds: 20) {
                    zip(instances, connectsBefore).allSatisfy { ($0.controlPlane?.statistics.connectCount ?? 0) > $1 }
                },
                "the instances stayed on the demoted master"
            )
            // Moved by the announcement, not by a connection the demoted master happened to close.
            for log in logs {
                #expect(log.lines.contains { $0.message == "Sentinel switched the Redis master" })
                #expect(
                    log.lines.contains { $0.metadata["error"]?.contains("Sentinel announced a new master") == true }
                )
            }
            // Both write to the new master: a change made through one is in the other's pool.
            let newMaster = try replica.client()
            #expect(
                await eventually {
                    guard case .array(let role) = try? newMaster.command(["ROLE"]) else { return false }
                    return role.first?.text == "master"
                }
            )
            try newMaster.publish("addServer", "127.0.0.1:7009")
            for instance in instances {
                #expect(await eventually { instance.poolPorts == [7009] })
            }
            #expect(
                await eventually {
                    (try? newMaster.pool()) == [BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 7009))]
                }
            )
            withExtendedLifetime(master) {}
        }
    }

    @Test("a sentinel URL is parsed; a bad one is one clear line")
    func urls() throws {
        let endpoint = try RedisEndpoint(parsing: "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/mymaster/2")
        #expect(
            endpoint.transport
                == .sentinel(
                    sentinels: [
                        HostAndPort(host: "10.0.0.1", port: 26_379), HostAndPort(host: "10.0.0.2", port: 26_380),
                    ],
                    master: "mymaster"
                )
        )
        #expect(endpoint.password == "pw" && endpoint.database == 2)
        #expect(endpoint.description == "redis+sentinel://:***@10.0.0.1:26379,10.0.0.2:26380/mymaster/2")
        for bad in [
            "redis+sentinel://10.0.0.1", "redis+sentinel://10.0.0.1/", "redis+sentinel://,/m", "redis+sentinel://h/m/x",
        ] {
            #expect(throws: L4LBError.self) { try RedisEndpoint(parsing: bad) }
        }
    }
}
