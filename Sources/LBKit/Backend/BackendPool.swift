import Foundation

/// An immutable snapshot of the pool. A change builds a new snapshot and swaps it in atomically, so
/// a pick always sees one consistent pool and never takes a lock.
public final class BackendPool: Sendable {
    public let backends: [Backend]
    /// Each backend's live state, by index, readable without reference counting (the pick's path).
    public let liveStates: [BackendLiveState]
    /// Increases with every snapshot a `Router` publishes; tells policies' tables which pool they fit.
    public let generation: UInt64
    /// The router's panic switch: on when every backend is retired.
    public let panic: PanicSwitch
    /// When this snapshot was built: since when the instance has run this pool (for `/status`).
    public let builtAt: Date

    public init(backends: [Backend], generation: UInt64, panic: PanicSwitch = PanicSwitch(), builtAt: Date = Date()) {
        self.backends = backends
        self.liveStates = backends.map(BackendLiveState.init)
        self.generation = generation
        self.panic = panic
        self.builtAt = builtAt
    }

    public static let empty = BackendPool(backends: [], generation: 0)

    public var count: Int { self.backends.count }
    public var isEmpty: Bool { self.backends.isEmpty }

    public subscript(index: Int) -> Backend { self.backends[index] }

    public func firstIndex(of address: HostAndPort) -> Int? {
        self.backends.firstIndex { $0.address == address }
    }

    public var specs: [BackendSpec] { self.backends.map(\.spec) }
}

extension BackendPool {
    /// Whether a policy may pick backend `index` for a client that must avoid `excluded`: not
    /// excluded, and not retired unless the pool is in panic mode.
    @inlinable
    public func isEligible(_ index: Int, excluding excluded: BackendExclusions) -> Bool {
        Self.isEligible(index, excluding: excluded, retired: self.backends[index].isRetired, panic: self.panic.isOn)
    }

    /// The same rule from values already read (the plugin adapter reads each backend's state
    /// without reference counting, and the panic switch once per pick).
    @inlinable
    public static func isEligible(
        _ index: Int,
        excluding excluded: BackendExclusions,
        retired: Bool,
        panic: Bool
    ) -> Bool {
        !excluded.contains(index) && (!retired || panic)
    }
}
