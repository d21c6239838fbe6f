/// A load-balancing algorithm, the one interface the data plane uses to choose backends.
///
/// The shape follows HAProxy's `lb_*.c` files: the algorithm is told about events (a new pool, a
/// connection opened or closed) and builds whatever tables it needs off the hot path, in
/// `makeSelector(for:)`; the pick itself runs concurrently on every relay thread, must not block, take
/// a global lock or allocate.
///
/// Everything crossing this interface maps onto C (addresses as bytes, backends as an index plus
/// attributes), so a policy loaded from a shared library can be adapted to it.
public protocol LoadBalancingPolicy: AnyObject, Sendable {
    /// The name operators use in `--policy` and `setPolicy`.
    var name: String { get }

    /// Called whenever the pool changes (and once when the policy is installed), from the control
    /// path, never concurrently with itself. Returns the selector that will serve picks for `pool`.
    func makeSelector(for pool: BackendPool) -> any BackendSelector

    /// Called on the client's relay thread after a backend was picked for a connection. Must not block.
    func connectionOpened(to backend: Backend)

    /// Called on the client's relay thread when a connection that `connectionOpened` announced ends,
    /// whether its connect failed or it ran to completion. Must not block.
    func connectionClosed(to backend: Backend)
}

extension LoadBalancingPolicy {
    public func connectionOpened(to backend: Backend) {}
    public func connectionClosed(to backend: Backend) {}
}

/// Serves picks for one pool snapshot.
public protocol BackendSelector: Sendable {
    /// Returns the index in the pool of the backend for this client, or nil when every backend is
    /// excluded (or the pool is empty). Called concurrently from every relay thread: no blocking, no
    /// global lock, no allocation.
    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int?

    /// Which backend `pick` would answer for `client` now, and why, as short steps; changes nothing
    /// (a round-robin explanation does not advance the rotation). For operators (`/explain`), off
    /// the hot path: it may allocate.
    func explain(for client: ClientAddress, excluding excluded: BackendExclusions) -> PickExplanation

    /// `pick`, but a policy that can answer nonsense (a plugin) reports it as a fault instead of
    /// serving the client some other way: for a shadow policy, which must be dropped, not covered for.
    func checkedPick(for client: ClientAddress, excluding excluded: BackendExclusions) -> CheckedPick
}

/// A pick's answer, with faults told apart.
public enum CheckedPick: Sendable, Equatable {
    case backend(Int)
    case none
    /// The policy answered something that is not a healthy backend of the pool.
    case fault(Int64)
}

/// A pick, explained: the steps that led to it and the backend (an index in the pool), if any.
public struct PickExplanation: Sendable, Equatable {
    public var steps: [String]
    public var backend: Int?

    public init(steps: [String], backend: Int?) {
        self.steps = steps
        self.backend = backend
    }
}

extension BackendSelector {
    public func checkedPick(for client: ClientAddress, excluding excluded: BackendExclusions) -> CheckedPick {
        self.pick(for: client, excluding: excluded).map(CheckedPick.backend) ?? .none
    }

    public func explain(for client: ClientAddress, excluding excluded: BackendExclusions) -> PickExplanation {
        PickExplanation(steps: ["this policy does not explain its picks"], backend: nil)
    }
}
