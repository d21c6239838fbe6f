/// The backends a pick must avoid, by index in the pool snapshot: the ones that already failed for
/// this client. A value type that does not allocate for pools of up to 64 backends.
public struct BackendExclusions: Sendable, Hashable {
    private var mask: UInt64 = 0
    private var overflow: [Int] = []

    public init() {}

    public static let none = BackendExclusions()

    public var isEmpty: Bool { self.mask == 0 && self.overflow.isEmpty }

    public var count: Int { self.mask.nonzeroBitCount + self.overflow.count }

    public func contains(_ index: Int) -> Bool {
        if index < 64 {
            return self.mask & (1 << UInt64(index)) != 0
        }
        return self.overflow.contains(index)
    }

    public mutating func insert(_ index: Int) {
        precondition(index >= 0, "backend index must not be negative")
        if index < 64 {
            self.mask |= 1 << UInt64(index)
        } else if !self.overflow.contains(index) {
            self.overflow.append(index)
        }
    }
}
