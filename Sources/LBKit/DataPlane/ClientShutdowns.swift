/// Client write shutdowns put off by one turn of the relay loop (`RelayLoop.passOnClientShutdowns`
/// says why): those put during one turn are due at the end of the next, so each waits for one more
/// look at the sockets whatever the turn it was put in. Connections are named by slot and
/// generation, so a connection that closed meanwhile (its slot maybe reused) is skipped.
struct ClientShutdowns {
    private var waiting: [(slot: Int32, generation: UInt32)] = []
    private var fresh: [(slot: Int32, generation: UInt32)] = []

    /// Nothing is put off: the loop may wait for events.
    var isEmpty: Bool { self.waiting.isEmpty && self.fresh.isEmpty }

    mutating func put(slot: Int, generation: UInt32) {
        self.fresh.append((Int32(slot), generation))
    }

    /// Calls `body` with each shutdown put before this turn; this turn's wait for the next.
    mutating func due(_ body: (Int, UInt32) -> Void) {
        for entry in self.waiting { body(Int(entry.slot), entry.generation) }
        // Swapped, not reallocated: both arrays keep their capacity.
        self.waiting.removeAll(keepingCapacity: true)
        swap(&self.waiting, &self.fresh)
    }
}
