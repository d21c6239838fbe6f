import Foundation
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

    @Test("SHA-256 matches the FIPS 180-4 examples and sha256sum around every block edge")
    func sha256() throws {
        #expect(SHA256.hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        )
        // A million 'a': many blocks.
        #expect(
            SHA256.hex([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        )
        // Around each padding boundary (55 and 56 bytes: the length fits the last block or not;
        // 63-65 and 119-120: block edges). Digests from coreutils' sha256sum and Python's hashlib,
        // which agree; written here so that the test starts no process.
        let boundaries: [(count: Int, digest: String)] = [
            (55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"),
            (56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"),
            (63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"),
            (64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"),
            (65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"),
            (119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"),
            (120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"),
        ]
        for (count, digest) in boundaries {
            #expect(SHA256.hex([UInt8](repeating: 0x61, count: count)) == digest, "\(count) bytes")
        }
    }
}

/// The simplest policy: always the first backend. For tests of the router, not of policies.
private final class FirstBackendPolicy: LoadBalancingPolicy, BackendSelector {
    let name = "first"
    func makeSelector(for pool: BackendPool) -> any BackendSelector { self }
    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? { 0 }
}
