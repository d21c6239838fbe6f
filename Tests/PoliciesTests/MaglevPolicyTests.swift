import LBKit
import Testing

@testable import LBKit
@testable import Policies

/// maglev on 100,000 synthetic clients: instances agree, a pool change moves few clients, shares
/// follow weights, and a retired backend's clients fail over while the others stay.
@Suite("Maglev")
struct MaglevPolicyTests {
    static let clients: [ClientAddress] = {
        var state: UInt64 = 42
        return (0..<100_000).map { _ in
            state = StableHash.mix(state &+ 0x9E37_79B9_7F4A_7C15)
            let word = UInt32(truncatingIfNeeded: state)
            let bytes = withUnsafeBytes(of: word.bigEndian) { Array($0) }
            return ClientAddress(family: .ipv4, bytes: bytes, port: UInt16(truncatingIfNeeded: state >> 32))
        }
    }()

    static func specs(_ count: Int, weight: (Int) -> Int = { _ in 1 }) -> [BackendSpec] {
        (0..<count).map { index in
            BackendSpec(
                address: HostAndPort(host: "10.0.\(index / 250).\(index % 250 + 1)", port: 80),
                weight: weight(index)
            )
        }
    }

    /// The backend address each client goes to, with `policy` over `specs`.
    static func assignment(_ specs: [BackendSpec], policy: MaglevPolicy = MaglevPolicy()) throws -> [HostAndPort?] {
        let router = Router(policy: policy)
        try router.setPool(specs)
        let table = router.table
        return Self.clients.map { client in
            table.selector.pick(for: client, excluding: .none).map { table.pool.backends[$0].address }
        }
    }

    static func moved(_ before: [HostAndPort?], _ after: [HostAndPort?]) -> Int {
        zip(before, after).filter { $0 != $1 }.count
    }

    @Test("two instances with the same pool, given in any order, send every client to the same backend")
    func agreement() throws {
        let specs = Self.specs(100)
        var shuffled = specs
        var state: UInt64 = 7
        for index in shuffled.indices.reversed() {
            state = StableHash.mix(state &+ 1)
            shuffled.swapAt(index, Int(state % UInt64(index + 1)))
        }
        #expect(shuffled != specs)
        #expect(try Self.assignment(specs) == Self.assignment(shuffled))
    }

    @Test(
        "removing one of 100 backends moves its own clients and at most 2% of the others; adding one moves at most 1/101 + 2%"
    )
    func minimalDisruption() throws {
        let specs = Self.specs(100)
        let before = try Self.assignment(specs)
        let removed = specs[37].address
        let after = try Self.assignment(specs.filter { $0.address != removed })
        let others = zip(before, after).filter { $0.0 != removed && $0.0 != $0.1 }.count
        #expect(zip(before, after).allSatisfy { $0.0 != removed || $0.1 != removed })
        #expect(Double(others) / Double(Self.clients.count) <= 0.02, "moved \(others) of the others")

        let grown = try Self.assignment(specs + Self.specs(101).suffix(1))
        let movedOnAdd = Double(Self.moved(before, grown)) / Double(Self.clients.count)
        #expect(movedOnAdd <= 1.0 / 101 + 0.02, "moved \(movedOnAdd)")

        // A plain modulo hash, as the source-hash example plugin does, for comparison.
        func modulo(_ count: Int) -> [Int] {
            Self.clients.map { Int($0.stableHash(includingPort: false) % UInt64(count)) }
        }
        let moduloMoved = Double(zip(modulo(100), modulo(99)).filter { $0 != $1 }.count) / Double(Self.clients.count)
        #expect(moduloMoved > 0.9, "modulo hashing moved \(moduloMoved)")
    }

    @Test("each backend's share of clients is within 5% of its weight's share")
    func balance() throws {
        let specs = Self.specs(10) { $0 + 1 }
        let assignment = try Self.assignment(specs)
        let total = Double(specs.map(\.weight).reduce(0, +))
        for spec in specs {
            let share = Double(assignment.filter { $0 == spec.address }.count) / Double(Self.clients.count)
            let expected = Double(spec.weight) / total
            #expect(abs(share - expected) / expected <= 0.05, "\(spec.address): \(share) against \(expected)")
        }
        // At 1,000 backends the table's own shares, exactly.
        let large = Self.specs(1000) { $0 % 4 + 1 }
        let table = MaglevTable(names: large.map(\.address.description), weights: large.map(\.weight), size: 65_537)
        var slots = [Int](repeating: 0, count: large.count)
        for index in table.slots { slots[Int(index)] += 1 }
        let largeTotal = Double(large.map(\.weight).reduce(0, +))
        for (index, spec) in large.enumerated() {
            let expected = Double(spec.weight) / largeTotal * Double(table.size)
            #expect(
                abs(Double(slots[index]) - expected) / expected <= 0.05,
                "\(spec.address): \(slots[index]) slots, \(expected) expected"
            )
        }
    }

    @Test("a retired backend's clients go to their next preference and all others stay, with the same table")
    func failover() throws {
        let policy = MaglevPolicy()
        let router = Router(policy: policy)
        try router.setPool(Self.specs(20))
        let table = router.table
        let selector = try #require(table.selector as? MaglevSelector)
        let before = Self.clients.map { selector.pick(for: $0, excluding: .none) }
        let retired = 5
        table.pool.backends[retired].health.setRetired(true)
        defer { table.pool.backends[retired].health.setRetired(false) }
        #expect(router.table === table)
        for (client, was) in zip(Self.clients, before) {
            let now = selector.pick(for: client, excluding: .none)
            if was != retired {
                #expect(now == was)
                continue
            }
            // The next slot in the table that holds another backend.
            var slot = selector.slot(for: client)
            while Int(selector.table.slots[slot]) == retired { slot = (slot + 1) % selector.table.size }
            #expect(now == Int(selector.table.slots[slot]))
        }
        // A client that already failed on one backend (a connect refused) is treated the same way.
        var excluded = BackendExclusions()
        excluded.insert(before[0]!)
        #expect(selector.pick(for: Self.clients[0], excluding: excluded) != before[0])
    }

    @Test("hash: address keeps a client's connections together; address_port spreads them")
    func ports() throws {
        let specs = Self.specs(10)
        let sameAddress = (0..<200).map {
            ClientAddress(family: .ipv4, bytes: [192, 0, 2, 9], port: UInt16(1000 + $0))
        }
        for (policy, spread) in [(MaglevPolicy(), false), (MaglevPolicy(hashesPort: true), true)] {
            let router = Router(policy: policy)
            try router.setPool(specs)
            let picked = Set(sameAddress.map { router.table.selector.pick(for: $0, excluding: .none) })
            #expect(spread ? picked.count > 5 : picked.count == 1)
        }
    }

    @Test("an empty pool picks nothing; every backend excluded picks nothing")
    func empty() throws {
        let router = Router(policy: MaglevPolicy())
        #expect(router.table.selector.pick(for: anyClient, excluding: .none) == nil)
        try router.setPool(Self.specs(2))
        var all = BackendExclusions()
        all.insert(0)
        all.insert(1)
        #expect(router.table.selector.pick(for: anyClient, excluding: all) == nil)
    }

    @Test(
        "configurations: the table size must be a prime in range; the hash is address or address_port",
        arguments: [
            (#"{"table_size": 65536}"#, "table_size must be a prime"),
            (#"{"table_size": 7}"#, "table_size must be a prime"),
            (#"{"table_size": "big"}"#, "table_size must be a prime"),
            (#"{"table_size": true}"#, "table_size must be a prime"),
            (#"{"hash": "port"}"#, "hash must be"),
            (#"{"size": 101}"#, "unknown setting 'size'"),
        ]
    )
    func configurations(configuration: String, message: String) {
        #expect {
            try BuiltinPolicies.makeRegistry().makePolicy(PolicySpec(name: "maglev", configuration: configuration))
        } throws: { error in
            (error as? L4LBError)?.message.contains(message) == true
        }
    }

    @Test("a good configuration is taken as given")
    func goodConfiguration() throws {
        let policy = try #require(
            try BuiltinPolicies.makeRegistry().makePolicy(
                PolicySpec(name: "maglev", configuration: #"{"table_size": 1009, "hash": "address_port"}"#)
            ) as? MaglevPolicy
        )
        #expect(policy.tableSize == 1009 && policy.hashesPort)
        #expect(MaglevTable.isPrime(65_537) && !MaglevTable.isPrime(65_535) && MaglevTable.isPrime(1_000_003))
    }
}
