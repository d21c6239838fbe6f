import LBControlPlane
import LBKit
import Testing

@Suite("Control plane input")
struct ControlPlaneParsingTests {
    @Test("Redis URLs")
    func redisURLs() throws {
        #expect(try RedisEndpoint(parsing: "redis://127.0.0.1").transport == .tcp(host: "127.0.0.1", port: 6379))
        let full = try RedisEndpoint(parsing: "redis://:secret@redis.internal:6380/2")
        #expect(full.transport == .tcp(host: "redis.internal", port: 6380))
        #expect(full.password == "secret")
        #expect(full.username == nil)
        #expect(full.database == 2)
        #expect(full.description == "redis://:***@redis.internal:6380/2")
        let user = try RedisEndpoint(parsing: "redis://ops:pw@[::1]:7000")
        #expect(user.transport == .tcp(host: "::1", port: 7000))
        #expect(user.username == "ops")
        #expect(try RedisEndpoint(parsing: "redis://[::1]").transport == .tcp(host: "::1", port: 6379))
        #expect(try RedisEndpoint(parsing: "unix:///run/redis.sock").transport == .unix(path: "/run/redis.sock"))
    }

    @Test(
        "bad Redis URLs",
        arguments: ["127.0.0.1:6379", "http://x", "redis://", "redis://h:99999", "redis://h/x", "unix://relative"]
    )
    func badRedisURLs(text: String) {
        #expect(throws: L4LBError.self) { try RedisEndpoint(parsing: text) }
    }

    @Test("serverPool documents: strings and objects, duplicates kept once")
    func poolDocuments() throws {
        let specs = try PoolDocument.decode(
            #"["127.0.0.1:6000", {"address": "127.0.0.1:3000", "weight": 2, "region": "EU", "note": "x"}, "127.0.0.1:6000"]"#
        )
        #expect(specs.map(\.description) == ["127.0.0.1:6000", "127.0.0.1:3000,weight=2,region=EU"])
        #expect(try PoolDocument.decode("[]") == [])
        let encoded = PoolDocument.encode(specs)
        #expect(encoded == #"["127.0.0.1:6000",{"address":"127.0.0.1:3000","region":"EU","weight":2}]"#)
        #expect(try PoolDocument.decode(encoded) == specs)
        let odd = BackendSpec(address: HostAndPort(host: "::1", port: 1), region: "a\"b\\c\n")
        #expect(try PoolDocument.decode(PoolDocument.encode([odd])) == [odd])
    }

    @Test(
        "bad serverPool documents",
        arguments: [
            "", "{}", "null", "\"127.0.0.1:1\"", "[1]", "[null]", "[\"nope\"]", "[{\"weight\":1}]",
            "[{\"address\":\"127.0.0.1:1\",\"weight\":1.5}]", "[{\"address\":\"127.0.0.1:1\",\"weight\":true}]",
            "[{\"address\":\"127.0.0.1:1\",\"region\":7}]", "[\"127.0.0.1:1\"", "[[\"127.0.0.1:1\"]]",
        ]
    )
    func badPoolDocuments(text: String) {
        #expect(throws: L4LBError.self) { try PoolDocument.decode(text) }
    }

    @Test(
        "a key given twice is refused in every form, with one line naming it",
        arguments: [
            (
                ControlChannel.addServer, #"{"address":"127.0.0.1:2","weight":1,"weight":500}"#,
                "'weight' is given twice"
            ),
            (.addServer, #"{"address":"127.0.0.1:2","address":"127.0.0.1:3"}"#, "'address' is given twice"),
            (.addServer, #"{"address":"127.0.0.1:2","w\u0065ight":1,"weight":2}"#, "'weight' is given twice"),
            (.addServer, "127.0.0.1:2,weight=2,weight=3", "'weight' is given twice"),
            (.addServer, "127.0.0.1:2,region=EU,region=US", "'region' is given twice"),
        ]
    )
    func duplicateKeys(channel: ControlChannel, payload: String, expected: String) {
        do throws(L4LBError) {
            let message = try ControlMessage(channel: channel, payload: payload)
            Issue.record("accepted: \(message)")
        } catch {
            #expect(error.message.contains(expected), "got: \(error.message)")
            #expect(!error.message.contains("\n"))
        }
    }

    @Test("a serverPool entry that names a key twice is refused; the same key in two entries is not")
    func duplicateKeysInPool() throws {
        #expect(throws: L4LBError.self) {
            try PoolDocument.decode(#"[{"address":"127.0.0.1:2","weight":1,"weight":9}]"#)
        }
        let specs = try PoolDocument.decode(
            #"[{"address":"127.0.0.1:2","weight":3},{"address":"127.0.0.1:3","weight":4}]"#
        )
        #expect(specs.map(\.weight) == [3, 4])
        #expect(JSONDuplicateKeys.first(in: #"{"a":{"b":1,"c":[{"b":2},{"b":3}]},"b":"{\"a\":1}"}"#) == nil)
        #expect(JSONDuplicateKeys.first(in: #"{"a":{"b":1,"b":2}}"#) == "b")
    }

    @Test("messages decode and apply idempotently")
    func messages() throws {
        let a = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 1))
        let b = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 2))
        let add = try ControlMessage(channel: .addServer, payload: " 127.0.0.1:2 ")
        #expect(add == .addServer(b))
        #expect(add.applied(to: [a]) == [a, b])
        #expect(add.applied(to: [a, b]) == nil)
        var heavier = b
        heavier.weight = 4
        let update = try ControlMessage(channel: .addServer, payload: #"{"address":"127.0.0.1:2","weight":4}"#)
        #expect(update.applied(to: [a, b]) == [a, heavier])
        let remove = try ControlMessage(channel: .removeServer, payload: "127.0.0.1:1")
        #expect(remove.applied(to: [a, b]) == [b])
        #expect(remove.applied(to: [b]) == nil)
        #expect(
            try ControlMessage(channel: .setPolicy, payload: "least-connections")
                == .setPolicy(PolicySpec(name: "least-connections"))
        )
    }

    @Test("prefixed names")
    func names() {
        let plain = RedisNames()
        #expect(plain.serverPoolKey == "serverPool")
        #expect(plain.channel(.addServer) == "addServer")
        let blue = RedisNames(prefix: "blue")
        #expect(blue.serverPoolKey == "blue:serverPool")
        #expect(blue.policyKey == "blue:policy")
        #expect(blue.controlChannel(named: "blue:setPolicy") == .setPolicy)
        #expect(blue.controlChannel(named: "setPolicy") == nil)
        #expect(RedisNames(prefix: "").serverPoolKey == "serverPool")
    }
}
