/// Least-connections' ordering of a pool, after HAProxy's lb_fwlc.c (a tree ordered by load): a
/// binary min-heap of backend indices keyed by `load / weight` (compared as `load_a * weight_b`
/// against `load_b * weight_a`, with no division), ties going to the backend picked longest ago.
/// A pick reads the root and re-sorts one entry: O(log n), not a scan of the pool.
///
/// Loads are the backends' live counters, which the data plane moves outside this type. The heap
/// keeps the last value it saw of each and is told of closes (`refresh`); a count that rose unseen
/// is found when its backend reaches the root, where every pick checks the root against its
/// counter before trusting it. Retired backends leave the heap (`park`) until they come back.
///
/// A value type with no locking of its own: its selector holds it under a lock.
struct LoadHeap {
    /// A backend's key, stored in its heap position so that a comparison reads one contiguous entry.
    private struct Entry {
        var load: Int
        var weight: Int
        var lastPick: UInt64
        var index: Int32

        /// Whether this entry should be picked before `other`.
        @inline(__always)
        func before(_ other: Entry) -> Bool {
            let left = self.load &* other.weight
            let right = other.load &* self.weight
            if left != right { return left < right }
            return self.lastPick < other.lastPick
        }
    }

    private var heap: [Entry]
    /// Each backend's place in `heap`, or -1 while parked.
    private var place: [Int32]
    private var parked: [Entry] = []
    private var sequence: UInt64

    init(weights: [Int], loads: [Int]) {
        let count = weights.count
        // Before any pick, ties go in pool order.
        self.heap = (0..<count).map {
            Entry(load: loads[$0], weight: max(1, weights[$0]), lastPick: UInt64($0), index: Int32($0))
        }
        self.place = (0..<count).map { Int32($0) }
        self.sequence = UInt64(count)
        for position in stride(from: count / 2 - 1, through: 0, by: -1) {
            self.siftDown(from: position)
        }
    }

    var isEmpty: Bool { self.heap.isEmpty && self.parked.isEmpty }

    /// When each backend was last picked (a sequence number; lower is longer ago), by pool index:
    /// the tie-break, for an explanation that must name the backend a pick would.
    func lastPicks() -> [UInt64] {
        var stamps = [UInt64](repeating: 0, count: self.place.count)
        for entry in self.heap + self.parked { stamps[Int(entry.index)] = entry.lastPick }
        return stamps
    }

    /// The backend with the least load per weight that `isEligible`, or nil. Backends that
    /// `isRetired` leave the heap until they are not; `currentLoad` reads a backend's counter.
    mutating func pick(
        currentLoad: (Int) -> Int,
        isRetired: (Int) -> Bool,
        isEligible: (Int) -> Bool
    ) -> Int? {
        if !self.parked.isEmpty {
            self.unparkRestored(isRetired: isRetired, currentLoad: currentLoad)
        }
        // Each pass either settles the root or moves a stale or retired entry off it: bounded by n.
        for _ in 0...self.heap.count {
            guard let root = self.heap.first else { return nil }
            let index = Int(root.index)
            let actual = currentLoad(index)
            if actual != root.load {
                self.heap[0].load = actual
                self.siftDown(from: 0)
                continue
            }
            if isRetired(index) {
                self.park(at: 0)
                continue
            }
            if isEligible(index) {
                self.chose(at: 0)
                return index
            }
            guard let position = self.firstEligible(isEligible) else { return nil }
            let chosen = Int(self.heap[position].index)
            self.chose(at: position)
            return chosen
        }
        // Counters moved under every pass (other threads closing connections): take the root as is.
        guard let root = self.heap.first, isEligible(Int(root.index)) else { return nil }
        self.chose(at: 0)
        return Int(root.index)
    }

    /// A backend's counter changed (a connection closed): re-sort it.
    mutating func refresh(_ index: Int, load: Int) {
        guard index < self.place.count else { return }
        let position = Int(self.place[index])
        guard position >= 0 else {
            if let parked = self.parked.firstIndex(where: { $0.index == Int32(index) }) {
                self.parked[parked].load = load
            }
            return
        }
        let old = self.heap[position].load
        self.heap[position].load = load
        if load > old { self.siftDown(from: position) } else if load < old { self.siftUp(from: position) }
    }

    /// The entry at `position` was picked: it goes behind its equals.
    private mutating func chose(at position: Int) {
        self.heap[position].lastPick = self.sequence
        self.sequence &+= 1
        self.siftDown(from: position)
    }

    /// The position of the least-loaded eligible backend below a root that is not (a retry avoiding
    /// the backend that just failed): a best-first walk of the heap, stopping at the first eligible.
    private func firstEligible(_ isEligible: (Int) -> Bool) -> Int? {
        var frontier: [Int] = [0]
        while !frontier.isEmpty {
            var best = 0
            for candidate in 1..<frontier.count where self.heap[frontier[candidate]].before(self.heap[frontier[best]]) {
                best = candidate
            }
            let position = frontier.remove(at: best)
            if isEligible(Int(self.heap[position].index)) { return position }
            for child in [2 * position + 1, 2 * position + 2] where child < self.heap.count {
                frontier.append(child)
            }
        }
        return nil
    }

    private mutating func park(at position: Int) {
        let entry = self.heap[position]
        self.place[Int(entry.index)] = -1
        self.parked.append(entry)
        let last = self.heap.removeLast()
        guard position < self.heap.count else { return }
        self.heap[position] = last
        self.place[Int(last.index)] = Int32(position)
        self.siftDown(from: position)
        self.siftUp(from: Int(self.place[Int(last.index)]))
    }

    private mutating func unparkRestored(isRetired: (Int) -> Bool, currentLoad: (Int) -> Int) {
        var still: [Entry] = []
        for var entry in self.parked {
            let index = Int(entry.index)
            if isRetired(index) {
                still.append(entry)
                continue
            }
            entry.load = currentLoad(index)
            self.heap.append(entry)
            self.place[index] = Int32(self.heap.count - 1)
            self.siftUp(from: self.heap.count - 1)
        }
        self.parked = still
    }

    /// Moves the entry at `start` up to its place, shifting the parents it passes down (one write each).
    private mutating func siftUp(from start: Int) {
        self.heap.withUnsafeMutableBufferPointer { heap in
            self.place.withUnsafeMutableBufferPointer { place in
                let moving = heap[start]
                var position = start
                while position > 0 {
                    let parent = (position - 1) / 2
                    guard moving.before(heap[parent]) else { break }
                    heap[position] = heap[parent]
                    place[Int(heap[position].index)] = Int32(position)
                    position = parent
                }
                heap[position] = moving
                place[Int(moving.index)] = Int32(position)
            }
        }
    }

    /// Moves the entry at `start` down to its place, shifting the children it passes up.
    private mutating func siftDown(from start: Int) {
        self.heap.withUnsafeMutableBufferPointer { heap in
            self.place.withUnsafeMutableBufferPointer { place in
                let count = heap.count
                let moving = heap[start]
                var position = start
                while true {
                    let left = 2 * position + 1
                    guard left < count else { break }
                    var child = left
                    if left + 1 < count, heap[left + 1].before(heap[left]) { child = left + 1 }
                    guard heap[child].before(moving) else { break }
                    heap[position] = heap[child]
                    place[Int(heap[position].index)] = Int32(position)
                    position = child
                }
                heap[position] = moving
                place[Int(moving.index)] = Int32(position)
            }
        }
    }
}
