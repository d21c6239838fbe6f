import LBKit

/// Maglev's lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
/// Balancer", NSDI 2016, section 3.4), with weights: `size` slots (a prime), each holding the
/// backend that clients hashing to it go to.
///
/// Each backend walks its own permutation of the slots, `(offset + j * skip) mod size`, where
/// `offset` and `skip` come from two stable hashes of its name; backends take turns claiming their
/// next free slot, `weight` claims per turn, until the table is full. The table depends only on the
/// set of (name, weight) pairs, never on their order: every instance that has the same pool builds
/// the same table, and a change of one backend moves few slots of the others.
///
/// Pure: built from values, read by index; the policy builds it off the hot path.
struct MaglevTable: Equatable, Sendable {
    /// Backends in the order the table was built (sorted by name), as indices into the caller's list.
    let order: [Int]
    /// For each slot, an index into the caller's list; -1 only when there are no backends.
    let slots: [Int32]

    var size: Int { self.slots.count }

    /// - Parameters:
    ///   - names: the backends' names (`host:port`), which seed their permutations.
    ///   - weights: each backend's weight (1 or more), in the same order.
    ///   - size: the number of slots, a prime larger than the number of backends.
    init(names: [String], weights: [Int], size: Int) {
        precondition(names.count == weights.count)
        let order = names.indices.sorted { names[$0] < names[$1] }
        var slots = [Int32](repeating: -1, count: size)
        self.order = order
        guard !names.isEmpty, size > 0 else {
            self.slots = slots
            return
        }
        let offsets = order.map { Int(StableHash.string(names[$0], seed: 0xA1) % UInt64(size)) }
        let skips = order.map { Int(StableHash.string(names[$0], seed: 0xB2) % UInt64(max(size - 1, 1))) + 1 }
        // next[k]: how far backend order[k] has walked its permutation.
        var next = [Int](repeating: 0, count: order.count)
        var filled = 0
        fill: while true {
            for (k, backend) in order.enumerated() {
                for _ in 0..<max(1, weights[backend]) {
                    var slot = (offsets[k] + next[k] * skips[k]) % size
                    while slots[slot] >= 0 {
                        next[k] += 1
                        slot = (offsets[k] + next[k] * skips[k]) % size
                    }
                    slots[slot] = Int32(backend)
                    next[k] += 1
                    filled += 1
                    if filled == size { break fill }
                }
            }
        }
        self.slots = slots
    }

    /// Whether `value` is prime (trial division: table sizes are at most a few million).
    static func isPrime(_ value: Int) -> Bool {
        guard value >= 2 else { return false }
        if value < 4 { return true }
        if value % 2 == 0 { return false }
        var divisor = 3
        while divisor * divisor <= value {
            if value % divisor == 0 { return false }
            divisor += 2
        }
        return true
    }
}
