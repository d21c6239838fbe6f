/// Least-connections' ordering of a pool, after HAProxy's lb_fwlc.c, which keeps servers in a tree
/// keyed by load per weight and queues a server behind its equals whenever its key changes.
///
/// Backends with the same key share a bucket, a first-in-first-out list; a min-heap holds the keys
/// that have a bucket. A pick takes the head of the lowest bucket and moves it to that bucket's
/// tail, so equally loaded backends take turns: O(1), where a heap of backends re-sorted the picked
/// one through every level of the pool on each pick. A backend whose load changes joins the tail of
/// its new key's bucket, as HAProxy requeues a server behind the servers of equal load (O(1), plus
/// O(log k) for a key no backend had, k the distinct keys: few, since loads differ little).
///
/// The key is `load << 24 / weight`, an integer that orders exactly as the fractions do: two loads
/// per weight that differ, differ by at least 1/(256 * 256), which the shift turns into a gap of 256
/// or more, so the floor keeps them apart (and equal fractions give equal keys).
///
/// Loads are the backends' live counters, which the data plane moves outside this type. The queue
/// keeps the last value it saw of each and is told of closes (`refresh`); a count that rose unseen
/// is found when its backend reaches the head, where every pick checks it against its counter
/// before trusting it. Retired backends leave the buckets (`park`) until they come back.
///
/// A value type with no locking of its own: its selector holds it under a lock.
struct LoadQueue {
    private static let none: Int32 = -1

    // Per backend, by pool index.
    private let weights: [Int32]
    /// The load last seen.
    private var seen: [Int32]
    /// The bucket the backend is in, or `none` while parked.
    private var bucketOf: [Int32]
    private var next: [Int32]
    private var previous: [Int32]
    private var parked: [Int32] = []

    // Per bucket, by slot; a slot whose bucket emptied is reused.
    private var keys: [UInt64] = []
    private var heads: [Int32] = []
    private var tails: [Int32] = []
    /// Whether the slot's key is in `lowest` (an emptied bucket stays there until it reaches the
    /// top, where it is dropped).
    private var queued: [Bool] = []
    private var freeSlots: [Int32] = []
    /// The slot of each key that has one.
    private var slotOfKey: [UInt64: Int32] = [:]
    /// Min-heap of (key, slot) of the buckets, the emptied ones included until they reach the top
    /// or `compact` drops them.
    private var lowest: [(key: UInt64, slot: Int32)] = []
    /// Buckets with at least one backend.
    private var occupied = 0

    init(weights: [Int], loads: [Int]) {
        let count = weights.count
        self.weights = weights.map { Int32(min(max(1, $0), 256)) }
        self.seen = loads.map { Int32(clamping: max(0, $0)) }
        self.bucketOf = Array(repeating: Self.none, count: count)
        self.next = Array(repeating: Self.none, count: count)
        self.previous = Array(repeating: Self.none, count: count)
        // In pool order: before any pick, ties go in pool order.
        for index in 0..<count { self.enqueue(index) }
    }

    /// The key of `load` connections on a backend of `weight` (1-256; see the type's comment).
    @inline(__always)
    private static func key(load: Int32, weight: Int32) -> UInt64 {
        (UInt64(max(0, load)) << 24) / UInt64(weight)
    }

    /// Each backend's place among the backends of its load, by pool index (0 picks first; parked
    /// backends last): the tie-break, for an explanation that must name the backend a pick would.
    func tieRanks() -> [Int] {
        var ranks = [Int](repeating: Int.max, count: self.seen.count)
        for slot in self.heads.indices {
            var index = self.heads[slot]
            var rank = 0
            while index != Self.none {
                ranks[Int(index)] = rank
                rank += 1
                index = self.next[Int(index)]
            }
        }
        return ranks
    }

    /// The backend with the least load per weight that `isEligible`, or nil. Backends that
    /// `isRetired` leave the queue until they are not; `currentLoad` reads a backend's counter.
    mutating func pick(
        currentLoad: (Int) -> Int,
        isRetired: (Int) -> Bool,
        isEligible: (Int) -> Bool
    ) -> Int? {
        if !self.parked.isEmpty {
            self.unparkRestored(isRetired: isRetired, currentLoad: currentLoad)
        }
        // Each pass either settles the head or moves a stale or retired backend: bounded by n.
        for _ in 0...self.seen.count {
            guard let slot = self.lowestBucket() else { return nil }
            let index = Int(self.heads[slot])
            let actual = Int32(clamping: currentLoad(index))
            if actual != self.seen[index] {
                self.move(index, load: actual)
                continue
            }
            if isRetired(index) {
                self.park(index)
                continue
            }
            if isEligible(index) {
                self.chose(index)
                return index
            }
            guard let chosen = self.firstEligible(isEligible, currentLoad: currentLoad) else { return nil }
            let load = Int32(clamping: currentLoad(chosen))
            if load != self.seen[chosen] { self.move(chosen, load: load) }
            self.chose(chosen)
            return chosen
        }
        // Counters moved under every pass (other threads closing connections): take the head as is.
        guard let slot = self.lowestBucket(), isEligible(Int(self.heads[slot])) else { return nil }
        let index = Int(self.heads[slot])
        self.chose(index)
        return index
    }

    /// A backend's counter changed (a connection closed): re-queue it.
    mutating func refresh(_ index: Int, load: Int) {
        guard index < self.seen.count else { return }
        let load = Int32(clamping: max(0, load))
        if self.bucketOf[index] == Self.none {
            self.seen[index] = load  // parked: taken into account when it comes back
        } else if load != self.seen[index] {
            self.move(index, load: load)
        }
    }

    /// The slot of the lowest non-empty bucket; emptied buckets met at the top are dropped.
    private mutating func lowestBucket() -> Int? {
        while let top = self.lowest.first {
            let slot = Int(top.slot)
            if self.heads[slot] != Self.none { return slot }
            self.popLowest()
            self.queued[slot] = false
            self.slotOfKey[self.keys[slot]] = nil
            self.freeSlots.append(Int32(slot))
        }
        return nil
    }

    /// The picked backend goes behind its equals.
    private mutating func chose(_ index: Int) {
        let slot = Int(self.bucketOf[index])
        guard self.tails[slot] != Int32(index) else { return }
        self.unlink(index)
        self.link(index, into: slot)
    }

    /// The least-loaded backend that `isEligible`, when the head is not (a retry avoiding the
    /// backend that just failed), from a scan of every queued backend's live load, ties going to
    /// the first in queue order: O(n); retries are rare. Live loads, not the loads seen: the seen
    /// load is checked only at the head, and a backend behind it may have gained connections since.
    private func firstEligible(_ isEligible: (Int) -> Bool, currentLoad: (Int) -> Int) -> Int? {
        var best: (key: UInt64, index: Int)?
        for slot in self.heads.indices {
            var index = self.heads[slot]
            while index != Self.none {
                let candidate = Int(index)
                index = self.next[candidate]
                guard isEligible(candidate) else { continue }
                let key = Self.key(load: Int32(clamping: currentLoad(candidate)), weight: self.weights[candidate])
                if best == nil || key < best!.key { best = (key, candidate) }
            }
        }
        return best?.index
    }

    private mutating func move(_ index: Int, load: Int32) {
        self.unlink(index)
        self.seen[index] = load
        self.enqueue(index)
    }

    private mutating func park(_ index: Int) {
        self.unlink(index)
        self.parked.append(Int32(index))
    }

    private mutating func unparkRestored(isRetired: (Int) -> Bool, currentLoad: (Int) -> Int) {
        var still: [Int32] = []
        for index in self.parked.map(Int.init) {
            if isRetired(index) {
                still.append(Int32(index))
                continue
            }
            self.seen[index] = Int32(clamping: max(0, currentLoad(index)))
            self.enqueue(index)
        }
        self.parked = still
    }

    /// Puts `index` at the tail of the bucket of its seen load, making the bucket if none has it.
    private mutating func enqueue(_ index: Int) {
        let key = Self.key(load: self.seen[index], weight: self.weights[index])
        let slot: Int
        if let existing = self.slotOfKey[key] {
            slot = Int(existing)
        } else {
            slot = self.makeBucket(key)
        }
        if !self.queued[slot] {
            self.queued[slot] = true
            self.pushLowest((key, Int32(slot)))
        }
        self.link(index, into: slot)
        // Emptied buckets wait in the heap until they reach its top; loads that wander upwards
        // would leave them there, so the heap is rebuilt when they outnumber the others.
        if self.lowest.count > 4 * self.occupied + 64 { self.compact() }
    }

    /// Drops every emptied bucket: O(k).
    private mutating func compact() {
        for slot in self.heads.indices where self.queued[slot] && self.heads[slot] == Self.none {
            self.queued[slot] = false
            self.slotOfKey[self.keys[slot]] = nil
            self.freeSlots.append(Int32(slot))
        }
        let kept = self.lowest.filter { self.queued[Int($0.slot)] }
        self.lowest = []
        for entry in kept { self.pushLowest(entry) }
    }

    private mutating func makeBucket(_ key: UInt64) -> Int {
        let slot: Int
        if let free = self.freeSlots.popLast() {
            slot = Int(free)
            self.keys[slot] = key
        } else {
            slot = self.keys.count
            self.keys.append(key)
            self.heads.append(Self.none)
            self.tails.append(Self.none)
            self.queued.append(false)
        }
        self.slotOfKey[key] = Int32(slot)
        return slot
    }

    private mutating func link(_ index: Int, into slot: Int) {
        let tail = self.tails[slot]
        self.previous[index] = tail
        self.next[index] = Self.none
        if tail == Self.none {
            self.heads[slot] = Int32(index)
            self.occupied += 1
        } else {
            self.next[Int(tail)] = Int32(index)
        }
        self.tails[slot] = Int32(index)
        self.bucketOf[index] = Int32(slot)
    }

    private mutating func unlink(_ index: Int) {
        let slot = Int(self.bucketOf[index])
        guard slot != Int(Self.none) else { return }
        let before = self.previous[index]
        let after = self.next[index]
        if before == Self.none { self.heads[slot] = after } else { self.next[Int(before)] = after }
        if after == Self.none { self.tails[slot] = before } else { self.previous[Int(after)] = before }
        if self.heads[slot] == Self.none { self.occupied -= 1 }
        self.bucketOf[index] = Self.none
    }

    private mutating func pushLowest(_ entry: (key: UInt64, slot: Int32)) {
        self.lowest.append(entry)
        var position = self.lowest.count - 1
        while position > 0 {
            let parent = (position - 1) / 2
            guard entry.key < self.lowest[parent].key else { break }
            self.lowest[position] = self.lowest[parent]
            position = parent
        }
        self.lowest[position] = entry
    }

    private mutating func popLowest() {
        let last = self.lowest.removeLast()
        guard !self.lowest.isEmpty else { return }
        var position = 0
        let count = self.lowest.count
        while true {
            let left = 2 * position + 1
            guard left < count else { break }
            var child = left
            if left + 1 < count, self.lowest[left + 1].key < self.lowest[left].key { child = left + 1 }
            guard self.lowest[child].key < last.key else { break }
            self.lowest[position] = self.lowest[child]
            position = child
        }
        self.lowest[position] = last
    }
}
