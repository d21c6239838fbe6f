import Atomics
import Foundation
import Logging
import NIOConcurrencyHelpers

/// A second policy beside the active one, asked for every sampled client but never obeyed: it shows
/// what a switch would do on live traffic before the switch (`setShadowPolicy`).
///
/// One `ShadowPolicy` lives from its installation to its removal; pool changes give it a new
/// `ShadowRoute` each (its selector for that pool), and its counts, kept per backend address,
/// survive them. Faults (an answer that is not a healthy backend) drop it for good: a shadow never
/// touches a client, and a broken one is not asked again.
public final class ShadowPolicy: Sendable {
    public let spec: PolicySpec
    public let policy: any LoadBalancingPolicy
    /// Percent of new clients asked (1-100).
    public let samplePercent: Int
    public let installedAt: Date

    private let arrivals = ManagedAtomic<UInt64>(0)
    let sampled = ManagedAtomic<Int>(0)
    let agreed = ManagedAtomic<Int>(0)
    /// Sampled clients for whom the shadow picked no backend.
    let pickedNone = ManagedAtomic<Int>(0)
    let faults = ManagedAtomic<Int>(0)
    let dropped = ManagedAtomic<Bool>(false)
    /// Picks per backend address: shared counters, so that a route's array of them is read without a
    /// lock and a pool change keeps the counts.
    private let picks = NIOLockedValueBox<[HostAndPort: ManagedAtomic<Int>]>([:])
    private let logger: Logger

    public init(spec: PolicySpec, policy: any LoadBalancingPolicy, samplePercent: Int, logger: Logger) {
        self.spec = spec
        self.policy = policy
        self.samplePercent = min(max(samplePercent, 1), 100)
        self.installedAt = Date()
        self.logger = logger
    }

    /// The counters for `pool`'s backends, in pool order (control path).
    func counters(for pool: BackendPool) -> [ManagedAtomic<Int>] {
        self.picks.withLockedValue { picks in
            pool.backends.map { backend in
                if let counter = picks[backend.address] { return counter }
                let counter = ManagedAtomic<Int>(0)
                picks[backend.address] = counter
                return counter
            }
        }
    }

    /// Whether the next client is in the sample: `samplePercent` of every 100 arrivals, spread.
    @inline(__always)
    func takesNextClient() -> Bool {
        guard self.samplePercent < 100 else { return true }
        let arrival = self.arrivals.loadThenWrappingIncrement(ordering: .relaxed)
        // Bresenham-like: arrival n is sampled when floor((n+1)p/100) > floor(np/100).
        let percent = UInt64(self.samplePercent)
        return (arrival &+ 1) &* percent / 100 > arrival &* percent / 100
    }

    func recordFault(answer: Int) {
        self.faults.wrappingIncrement(ordering: .relaxed)
        if self.dropped.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            self.logger.warning(
                "shadow policy dropped: its pick answered \(answer), not a healthy backend; no client was affected",
                metadata: ["policy": "\(self.spec.name)"]
            )
        }
    }

    /// What the shadow has seen so far, for `/status`, `/metrics` and `l4lb ctl shadow`.
    public func report(pool: BackendPool) -> ShadowReport {
        let counts = self.picks.withLockedValue { $0.mapValues { $0.load(ordering: .relaxed) } }
        let sampled = self.sampled.load(ordering: .relaxed)
        let inPool = Set(pool.backends.map(\.address))
        var backends = pool.backends.map { backend in
            ShadowReport.BackendPicks(
                address: backend.address.description,
                region: backend.region,
                picks: counts[backend.address] ?? 0,
                inPool: true
            )
        }
        // Backends removed since: their picks still count toward the total.
        for (address, picks) in counts.sorted(by: { $0.key.description < $1.key.description })
        where !inPool.contains(address) && picks > 0 {
            backends.append(.init(address: address.description, region: nil, picks: picks, inPool: false))
        }
        return ShadowReport(
            policy: self.spec.name,
            spec: self.spec.description,
            samplePercent: self.samplePercent,
            since: Timestamp.iso8601(self.installedAt),
            sampled: sampled,
            agreed: self.agreed.load(ordering: .relaxed),
            pickedNone: self.pickedNone.load(ordering: .relaxed),
            faults: self.faults.load(ordering: .relaxed),
            dropped: self.dropped.load(ordering: .relaxed),
            backends: backends
        )
    }
}

/// The shadow policy's selector for one pool, held by that pool's routing table.
public final class ShadowRoute: Sendable {
    public let shadow: ShadowPolicy
    private let selector: any BackendSelector
    private let counters: [ManagedAtomic<Int>]

    init(shadow: ShadowPolicy, pool: BackendPool) {
        self.shadow = shadow
        self.selector = shadow.policy.makeSelector(for: pool)
        self.counters = shadow.counters(for: pool)
    }

    /// What the shadow would pick for `client`, and why (for `/explain`).
    func explain(_ client: ClientAddress) -> PickExplanation {
        self.selector.explain(for: client, excluding: .none)
    }

    /// Asks the shadow about a client whose first pick by the active policy was `active`, if the
    /// client is in the sample, and counts the answer. On the relay thread: atomics only.
    @inline(__always)
    public func observe(_ client: ClientAddress, active: Int, excluding excluded: BackendExclusions) {
        guard !self.shadow.dropped.load(ordering: .relaxed), self.shadow.takesNextClient() else { return }
        self.shadow.sampled.wrappingIncrement(ordering: .relaxed)
        switch self.selector.checkedPick(for: client, excluding: excluded) {
        case .backend(let index) where index >= 0 && index < self.counters.count:
            self.counters[index].wrappingIncrement(ordering: .relaxed)
            if index == active { self.shadow.agreed.wrappingIncrement(ordering: .relaxed) }
        case .backend(let index):
            self.shadow.recordFault(answer: index)
        case .fault(let answer):
            self.shadow.recordFault(answer: Int(truncatingIfNeeded: answer))
        case .none:
            self.shadow.pickedNone.wrappingIncrement(ordering: .relaxed)
        }
    }
}

/// A shadow policy's counts, as `/status` and the status key show them.
public struct ShadowReport: Codable, Sendable, Equatable {
    public struct BackendPicks: Codable, Sendable, Equatable {
        public var address: String
        public var region: String?
        public var picks: Int
        /// False for a backend removed since the shadow was installed.
        public var inPool: Bool

        enum CodingKeys: String, CodingKey {
            case address
            case region
            case picks
            case inPool = "in_pool"
        }
    }

    public var policy: String
    public var spec: String
    public var samplePercent: Int
    public var since: String
    public var sampled: Int
    public var agreed: Int
    public var pickedNone: Int
    public var faults: Int
    public var dropped: Bool
    public var backends: [BackendPicks]

    enum CodingKeys: String, CodingKey {
        case policy
        case spec
        case samplePercent = "sample_percent"
        case since
        case sampled
        case agreed
        case pickedNone = "picked_none"
        case faults
        case dropped
        case backends
    }
}
