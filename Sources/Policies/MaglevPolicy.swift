import LBKit

/// Consistent hashing with Maglev's lookup table: a client (its address, or address and port) maps
/// to one slot of the table, and the slot names its backend. Every l4lb instance with the same pool
/// builds the same table, so instances behind ECMP or DNS send a client to the same backend without
/// talking to each other; a pool change moves few clients.
///
/// A retired or excluded backend is skipped, not rebuilt around: its clients go on to the next slot
/// that holds an eligible backend (their next preference), and every other client stays put.
///
/// Configuration: `maglev {"table_size": 65537, "hash": "address"}` (both optional; the size must
/// be a prime, at least 101 and at most 1,000,003; `hash` is `address` or `address_port`).
public final class MaglevPolicy: LoadBalancingPolicy {
    public static let name = "maglev"
    public static let defaultTableSize = 65_537
    static let tableSizes = 101...1_000_003

    public var name: String { Self.name }
    public let tableSize: Int
    public let hashesPort: Bool

    public init(tableSize: Int = MaglevPolicy.defaultTableSize, hashesPort: Bool = false) {
        self.tableSize = tableSize
        self.hashesPort = hashesPort
    }

    /// The policy a spec's configuration describes; throws a one-line error for a bad one.
    public convenience init(spec: PolicySpec) throws(L4LBError) {
        let object = try spec.configurationObject()
        let unknown = Set(object.keys).subtracting(["table_size", "hash"])
        guard unknown.isEmpty else {
            throw L4LBError(
                .invalidPolicyConfiguration,
                "policy 'maglev': unknown setting '\(unknown.sorted()[0])' (known: table_size, hash)"
            )
        }
        var size = Self.defaultTableSize
        if let value = object["table_size"] {
            guard let number = value as? Int, !(value is Bool), Self.tableSizes.contains(number),
                MaglevTable.isPrime(number)
            else {
                throw L4LBError(
                    .invalidPolicyConfiguration,
                    "policy 'maglev': table_size must be a prime in 101-1000003 (e.g. 65537), got \(value)"
                )
            }
            size = number
        }
        var hashesPort = false
        if let value = object["hash"] {
            switch value as? String {
            case "address": hashesPort = false
            case "address_port": hashesPort = true
            default:
                throw L4LBError(
                    .invalidPolicyConfiguration,
                    "policy 'maglev': hash must be \"address\" or \"address_port\", got \(value)"
                )
            }
        }
        self.init(tableSize: size, hashesPort: hashesPort)
    }

    public func makeSelector(for pool: BackendPool) -> any BackendSelector {
        MaglevSelector(
            pool: pool,
            table: MaglevTable(
                names: pool.backends.map(\.address.description),
                weights: pool.backends.map(\.weight),
                size: self.tableSize
            ),
            hashesPort: self.hashesPort
        )
    }
}

/// Serves picks from one table: a hash, a read, and a walk past ineligible backends.
struct MaglevSelector: BackendSelector {
    let pool: BackendPool
    let table: MaglevTable
    let hashesPort: Bool

    /// The slot `client` hashes to.
    func slot(for client: ClientAddress) -> Int {
        Int(client.stableHash(includingPort: self.hashesPort) % UInt64(self.table.size))
    }

    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? {
        let count = self.pool.count
        guard count > 0, excluded.count < count else { return nil }
        let slots = self.table.slots
        var slot = self.slot(for: client)
        // The first slot usually answers; past a retired or excluded backend the walk goes on to the
        // next slots, which hold the others in table proportion. Bounded by the table's size.
        for _ in 0..<slots.count {
            let index = Int(slots[slot])
            if index >= 0, self.pool.isEligible(index, excluding: excluded) { return index }
            slot += 1
            if slot == slots.count { slot = 0 }
        }
        return nil
    }

    func explain(for client: ClientAddress, excluding excluded: BackendExclusions) -> PickExplanation {
        let slots = self.table.slots
        guard self.pool.count > 0 else { return PickExplanation(steps: ["the pool is empty"], backend: nil) }
        let first = self.slot(for: client)
        var steps = ["hash of \(client)\(self.hashesPort ? "" : " (address only)") -> slot \(first) of \(slots.count)"]
        // The client's preference order: the distinct backends met walking from its slot.
        var order: [Int] = []
        var slot = first
        var chosen: Int?
        for _ in 0..<slots.count where order.count < 3 || chosen == nil {
            let index = Int(slots[slot])
            if index >= 0, !order.contains(index) {
                order.append(index)
                if chosen == nil {
                    if self.pool.isEligible(index, excluding: excluded) {
                        chosen = index
                    } else {
                        steps.append(
                            "\(self.pool[index].address) skipped (\(excluded.contains(index) ? "excluded" : "retired"))"
                        )
                    }
                }
            }
            slot = slot + 1 == slots.count ? 0 : slot + 1
        }
        steps.append(
            "preference order: " + order.prefix(3).map { self.pool[$0].address.description }.joined(separator: ", ")
        )
        if let chosen { steps.append("maglev: \(self.pool[chosen].address)") }
        return PickExplanation(steps: steps, backend: chosen)
    }
}
