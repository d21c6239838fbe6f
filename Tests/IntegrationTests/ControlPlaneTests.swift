import Foundation
import LBControlPlane
import LBKit
import NIOConcurrencyHelpers
import Policies
import Testing

@testable import l4lb

/// The Redis control plane end to end: a real redis-server, real backends, l4lb's real wiring.
@Suite("Redis control plane")
struct ControlPlaneTests {
    @Test("addServer: new clients reach the backend, and serverPool shows it")
    func addServer() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: [backends[0].spec], redis: redis)
            let client = try redis.client()

            #expect(try client.publish("addServer", "127.0.0.1:\(backends[1].port)") == 1)
            #expect(await eventually { proxy.poolPorts == [backends[0].port, backends[1].port] })
            let served = try (0..<4).map { _ in try BlockingClient.greeting(port: proxy.port) }
            #expect(Set(served) == ["a", "b"])
            #expect(await eventually { (try? client.pool()) == [backends[0].spec, backends[1].spec] })
        }
    }

    @Test("addServer of l4lb's own listen address is refused: the pool is unchanged and clients are still served")
    func addServerOwnAddress() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: [backends[0].spec], redis: redis)
            let client = try redis.client()

            let statistics = try #require(proxy.controlPlane?.statistics)
            #expect(try client.publish("addServer", "127.0.0.1:\(proxy.port)") == 1)
            #expect(await eventually { statistics.refusedMessages == 1 })
            #expect(proxy.poolPorts == [backends[0].port])
            #expect(try client.publish("addServer", "127.0.0.1:\(backends[1].port)") == 1)
            #expect(await eventually { proxy.poolPorts == [backends[0].port, backends[1].port] })
            let served = try (0..<4).map { _ in try BlockingClient.greeting(port: proxy.port) }
            #expect(Set(served) == ["a", "b"])
        }
    }

    @Test("addServer with the object form carries weight and region")
    func addServerObject() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let proxy = try await r.l4lb(backends: [], redis: redis)
            let client = try redis.client()

            try client.publish("addServer", #"{"address":"127.0.0.1:7001","weight":3,"region":"EU"}"#)
            let expected = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 7001), weight: 3, region: "EU")
            #expect(await eventually { proxy.router.pool.specs == [expected] })
            #expect(await eventually { (try? client.pool()) == [expected] })
        }
    }

    @Test("removeServer: no new clients for it, its open connection runs to its end")
    func removeServer() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: backends.map(\.spec), redis: redis)
            let client = try redis.client()

            let held = try BlockingClient(port: proxy.port)
            #expect(try held.readLine() == "a")
            try client.publish("removeServer", "127.0.0.1:\(backends[0].port)")
            #expect(await eventually { proxy.poolPorts == [backends[1].port] })
            for _ in 0..<4 {
                #expect(try BlockingClient.greeting(port: proxy.port) == "b")
            }
            try held.send("still flowing\n")
            #expect(try held.readLine() == "still flowing")
            #expect(await eventually { (try? client.pool()) == [backends[1].spec] })
        }
    }

    @Test("setPolicy: takes effect for the next client, the policy key follows, open connections keep flowing")
    func setPolicy() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backend = try await r.backend(.greet("a"))
            let proxy = try await r.l4lb(backends: [backend.spec], redis: redis)
            let client = try redis.client()

            let held = try BlockingClient(port: proxy.port)
            #expect(try held.readLine() == "a")
            try client.publish("setPolicy", "least-connections")
            #expect(await eventually { proxy.router.policy.name == "least-connections" })
            #expect(await eventually { (try? client.command(["GET", "policy"])) == .string("least-connections") })
            try held.send("x\n")
            #expect(try held.readLine() == "x")
            #expect(try BlockingClient.greeting(port: proxy.port) == "a")
        }
    }

    @Test("at start the keys win over the flags")
    func startReadsKeys() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b"])
            let client = try redis.client()
            try client.command(["SET", "serverPool", "[\"127.0.0.1:\(backends[1].port)\"]"])
            try client.command(["SET", "policy", "least-connections"])
            let proxy = try await r.l4lb(backends: [backends[0].spec], redis: redis)

            #expect(proxy.poolPorts == [backends[1].port])
            #expect(proxy.router.policy.name == "least-connections")
            #expect(try BlockingClient.greeting(port: proxy.port) == "b")
        }
    }

    @Test("at start a missing key is seeded from the flags")
    func startSeedsKeys() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backend = try await r.backend(.greet("a"))
            _ = try await r.l4lb(backends: [backend.spec], redis: redis)
            let client = try redis.client()

            #expect(try client.pool() == [backend.spec])
            #expect(try client.command(["GET", "policy"]) == .string("round-robin"))
        }
    }

    @Test("with no key and no backend l4lb starts empty, refuses clients, and serves once a backend is added")
    func startEmpty() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backend = try await r.backend(.greet("a"))
            let proxy = try await r.l4lb(backends: [], redis: redis)
            let client = try redis.client()

            #expect(try client.pool() == nil)
            #expect(try BlockingClient(port: proxy.port).readLine() == nil)
            try client.publish("addServer", "127.0.0.1:\(backend.port)")
            #expect(await eventually { proxy.poolPorts == [backend.port] })
            #expect(try BlockingClient.greeting(port: proxy.port) == "a")
        }
    }

    @Test("--redis-prefix puts keys and channels under the prefix and ignores the unprefixed ones")
    func prefix() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let proxy = try await r.l4lb(
                backends: [BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 7001))],
                redis: redis,
                ["--redis-prefix", "blue"]
            )
            let client = try redis.client()

            #expect(try client.pool(key: "blue:serverPool")?.count == 1)
            #expect(try client.publish("addServer", "127.0.0.1:7002") == 0)
            #expect(try client.publish("blue:addServer", "127.0.0.1:7003") == 1)
            #expect(await eventually { proxy.poolPorts == [7001, 7003] })
            #expect(
                await eventually { (try? client.pool(key: "blue:serverPool"))??.map(\.address.port) == [7001, 7003] }
            )
            #expect(try client.pool() == nil)
        }
    }

    /// Two l4lb instances, each with its own data plane and control plane, on one Redis.
    private static func twoInstances(
        _ r: TestResources,
        redis: RedisServer
    ) async throws -> (Application, Application) {
        (try await r.l4lb(redis: redis), try await r.l4lb(redis: redis))
    }

    @Test("two instances on one Redis both apply every change")
    func twoInstances() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let (first, second) = try await Self.twoInstances(r, redis: redis)
            let client = try redis.client()

            #expect(try client.publish("addServer", "127.0.0.1:7001") == 2)
            try client.publish("addServer", "127.0.0.1:7002")
            try client.publish("removeServer", "127.0.0.1:7001")
            try client.publish("setPolicy", "least-connections")
            for proxy in [first, second] {
                #expect(
                    await eventually { proxy.poolPorts == [7002] && proxy.router.policy.name == "least-connections" }
                )
            }
            #expect(await eventually { (try? client.pool())??.map(\.address.port) == [7002] })
        }
    }

    @Test("interleaved adds and removes from two publishers leave the key equal to the applied set, no duplicates")
    func interleavedPublishers() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let (first, second) = try await Self.twoInstances(r, redis: redis)

            // A third subscriber records the order Redis delivered the messages in: the truth.
            let observer = try redis.client()
            try observer.send(["SUBSCRIBE", "addServer", "removeServer"])
            let ports = Array(7001...7006)
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                guard let publisher = try? redis.client() else { return }
                var generator = SystemRandomNumberGenerator()
                for _ in 0..<60 {
                    let port = ports.randomElement(using: &generator)!
                    let channel = Bool.random(using: &generator) ? "addServer" : "removeServer"
                    _ = try? publisher.publish(channel, "127.0.0.1:\(port)")
                }
            }
            var present = Set<Int>()
            var seen = 0
            while seen < 120, let reply = try observer.nextReply(waitingUpTo: 5_000) {
                guard case .array(let parts) = reply, parts.count == 3, parts[0].text == "message",
                    let channel = parts[1].text, let payload = parts[2].text,
                    let port = Int(payload.split(separator: ":").last ?? "")
                else { continue }
                seen += 1
                if channel == "addServer" { present.insert(port) } else { present.remove(port) }
            }
            #expect(seen == 120)
            let expected = present
            for proxy in [first, second] {
                #expect(await eventually { Set(proxy.poolPorts) == expected })
                #expect(proxy.poolPorts.count == Set(proxy.poolPorts).count)
            }
            let client = try redis.client()
            #expect(await eventually { (try? client.pool())??.map(\.address.port).sorted() == expected.sorted() })
            let key = try #require(try client.pool()).map(\.address.port)
            #expect(key.count == Set(key).count, "duplicates in serverPool: \(key)")
        }
    }

    @Test(
        "Redis stopped and started while clients connect: no client fails, and a change l4lb had not seen is in effect after reconnect"
    )
    func redisRestart() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b"])
            let proxy = try await r.l4lb(backends: [backends[0].spec], redis: redis)
            let controlPlane = try #require(proxy.controlPlane)
            #expect(controlPlane.statistics.isConnected)

            // Written to the key without a message, then Redis goes away before l4lb re-reads it.
            let client = try redis.client()
            try client.command(["SET", "serverPool", "[\"127.0.0.1:\(backends[1].port)\"]"])
            try client.command(["SAVE"])
            redis.kill()
            #expect(await eventually { !controlPlane.statistics.isConnected })
            for _ in 0..<20 {
                #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            }
            try await redis.start()
            #expect(await eventually(timeoutSeconds: 10) { controlPlane.statistics.connectCount == 2 })
            #expect(await eventually { proxy.poolPorts == [backends[1].port] })
            #expect(try BlockingClient.greeting(port: proxy.port) == "b")
        }
    }

    @Test(
        "bad input is refused, counted, and changes nothing",
        arguments: [
            ("addServer", "not-an-address"),
            ("addServer", "127.0.0.1:99999"),
            ("addServer", "127.0.0.1:80,weight=0"),
            ("addServer", #"{"address": 42}"#),
            ("addServer", #"{"address": "127.0.0.1:80", "weight": "heavy"}"#),
            ("addServer", #"{"address": "127.0.0.1:80""#),
            ("addServer", "no-such-host.invalid:80"),
            ("addServer", String(repeating: "x", count: 70_000)),
            ("removeServer", "::1:80"),
            ("removeServer", ""),
            ("setPolicy", "fastest"),
            ("setPolicy", "round-robin {broken"),
            ("setPolicy", #"round-robin {"unexpected": 1}"#),
            ("setPolicy", "least-connections [1]"),
        ]
    )
    func badMessages(channel: String, payload: String) async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backend = try await r.backend(.greet("a"))
            let proxy = try await r.l4lb(backends: [backend.spec], redis: redis)
            let controlPlane = try #require(proxy.controlPlane)
            let client = try redis.client()
            let keyBefore = try client.command(["GET", "serverPool"])

            try client.publish(channel, payload)
            #expect(await eventually { controlPlane.statistics.refusedMessages == 1 })
            #expect(proxy.poolPorts == [backend.port])
            #expect(proxy.router.policy.name == "round-robin")
            #expect(try client.command(["GET", "serverPool"]) == keyBefore)
            #expect(try client.command(["GET", "policy"]) == .string("round-robin"))
            #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            #expect(controlPlane.statistics.isConnected)
        }
    }

    @Test(
        "a bad serverPool key at start is refused and the flags' pool is kept",
        arguments: ["{\"a\":1}", "[1,2]", "not json", "[\"127.0.0.1:0\"]", "[{\"weight\":2}]"]
    )
    func badPoolKey(value: String) async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backend = try await r.backend(.greet("a"))
            let client = try redis.client()
            try client.command(["SET", "serverPool", value])
            let proxy = try await r.l4lb(backends: [backend.spec], redis: redis)
            let controlPlane = try #require(proxy.controlPlane)

            #expect(controlPlane.statistics.refusedMessages == 1)
            #expect(proxy.poolPorts == [backend.port])
            #expect(try BlockingClient.greeting(port: proxy.port) == "a")
            // The next change repairs the key from the pool in use.
            try client.publish("addServer", "127.0.0.1:7009")
            #expect(
                await eventually {
                    (try? client.pool()) == [
                        backend.spec, BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 7009)),
                    ]
                }
            )
        }
    }

    @Test(
        "Redis SIGSTOPped: clients are served on the last pool, no reconnect is logged while it is frozen, changes apply once it resumes"
    )
    func frozenRedis() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backends = try await r.greeters(["a", "b"])
            let log = CapturedLog()
            let proxy = try await r.l4lb(backends: [backends[0].spec], redis: redis, logger: log.logger())
            let statistics = try #require(proxy.controlPlane?.statistics)
            #expect(statistics.isConnected)

            redis.send(SIGSTOP)
            // The status refresh (every 200 ms here) times out after the command timeout (2 s): the
            // control plane notices the frozen server and keeps retrying, while clients are served.
            #expect(await eventually(timeoutSeconds: 15) { !statistics.isConnected })
            for _ in 0..<20 { #expect(try BlockingClient.greeting(port: proxy.port) == "a") }
            // The connection lost, then two reconnect attempts timed out against the frozen server
            // (its kernel still accepts connections; nothing answers on them).
            let failures = statistics.connectionFailures
            #expect(await eventually(timeoutSeconds: 15) { statistics.connectionFailures >= failures + 2 })
            #expect(
                !log.lines.contains { $0.message.hasPrefix("reconnected to Redis") },
                "a frozen Redis answered nothing"
            )
            #expect(statistics.connectCount == 1)

            redis.send(SIGCONT)
            // Published once l4lb is subscribed again: pub/sub keeps nothing for absent subscribers.
            #expect(await eventually(timeoutSeconds: 15) { statistics.isConnected })
            try redis.client().publish("addServer", backends[1].spec.description)
            #expect(await eventually(timeoutSeconds: 15) { proxy.poolPorts == [backends[0].port, backends[1].port] })
            #expect(log.lines.filter { $0.message.hasPrefix("reconnected to Redis") }.count == 1)
            #expect(statistics.connectCount == 2)
        }
    }
}
