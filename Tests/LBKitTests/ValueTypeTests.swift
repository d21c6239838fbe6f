import LBKit
import NIOCore
import Testing

@Suite("Value types")
struct ValueTypeTests {
    @Test("exclusions below and above 64 backends")
    func exclusions() {
        var excluded = BackendExclusions()
        #expect(excluded.isEmpty)
        for index in [0, 5, 63, 64, 200] { excluded.insert(index) }
        excluded.insert(200)
        #expect(excluded.count == 5)
        for index in [0, 5, 63, 64, 200] { #expect(excluded.contains(index)) }
        for index in [1, 62, 65, 199] { #expect(!excluded.contains(index)) }
    }

    @Test("client addresses from socket addresses")
    func clientAddresses() throws {
        let v4 = ClientAddress(try SocketAddress(ipAddress: "81.2.69.160", port: 4000))
        #expect(v4.family == .ipv4)
        #expect(v4.bytes == [81, 2, 69, 160])
        #expect(v4.port == 4000)
        #expect(v4.description == "81.2.69.160:4000")

        let v6 = ClientAddress(try SocketAddress(ipAddress: "2001:218::1", port: 5))
        #expect(v6.family == .ipv6)
        #expect(v6.bytes == [0x20, 0x01, 0x02, 0x18] + [UInt8](repeating: 0, count: 11) + [1])
        #expect(ClientAddress(nil).family == .unspecified)
    }

    @Test("a router keeps one entry per address and keeps counters across pool changes")
    func routerPoolChanges() throws {
        let router = Router(policy: FirstBackendPolicy())
        let a = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 1))
        let b = BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 2))
        try router.setPool([a, b, a])
        #expect(router.pool.specs == [a, b])
        let generation = router.pool.generation
        let counters = router.pool[1].counters
        var heavier = b
        heavier.weight = 5
        try router.setPool([heavier])
        #expect(router.pool.generation > generation)
        #expect(router.pool[0].counters === counters)
        #expect(router.pool[0].weight == 5)
    }

    @Test("a backend name that does not resolve is refused and leaves the pool as it was")
    func unresolvable() throws {
        let router = Router(policy: FirstBackendPolicy())
        try router.setPool([BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 1))])
        #expect(throws: L4LBError.self) {
            try router.setPool([BackendSpec(address: HostAndPort(host: "no-such-host.invalid", port: 1))])
        }
        #expect(router.pool.count == 1)
    }
}

/// The simplest policy: always the first backend. For tests of the router, not of policies.
private final class FirstBackendPolicy: LoadBalancingPolicy, BackendSelector {
    let name = "first"
    func makeSelector(for pool: BackendPool) -> any BackendSelector { self }
    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? { 0 }
}
