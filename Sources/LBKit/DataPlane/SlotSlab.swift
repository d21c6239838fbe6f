/// The relay loop's preallocated connection slots, in one buffer that grows by doubling and never
/// shrinks. An `Array` cannot hold non-copyable slots; this holds them in place, and a slot is read
/// and changed through its address, with no copy and no reference count.
///
/// Confined to the loop's thread, like the slots.
struct SlotSlab: ~Copyable {
    private var base: UnsafeMutablePointer<RelaySlot>
    private(set) var count = 0

    init() {
        self.base = UnsafeMutablePointer<RelaySlot>.allocate(capacity: 0)
    }

    deinit {
        self.base.deinitialize(count: self.count)
        self.base.deallocate()
    }

    subscript(index: Int) -> RelaySlot {
        unsafeAddress {
            precondition(index >= 0 && index < self.count, "slot \(index) outside the slab")
            return UnsafePointer(self.base + index)
        }
        nonmutating unsafeMutableAddress {
            precondition(index >= 0 && index < self.count, "slot \(index) outside the slab")
            return self.base + index
        }
    }

    /// Grows to `count` slots, each made by `make`; the slots already there keep their state.
    mutating func grow(to count: Int, _ make: () -> RelaySlot) {
        guard count > self.count else { return }
        let grown = UnsafeMutablePointer<RelaySlot>.allocate(capacity: count)
        grown.moveInitialize(from: self.base, count: self.count)
        for index in self.count..<count {
            (grown + index).initialize(to: make())
        }
        self.base.deallocate()
        self.base = grown
        self.count = count
    }
}
