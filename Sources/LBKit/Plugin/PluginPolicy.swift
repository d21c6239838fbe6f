import Atomics
import CLBPolicy
import Logging

/// A loaded plugin's instance, adapted to `LoadBalancingPolicy`: the data plane cannot tell it from
/// a built-in policy.
///
/// A pick hands the plugin the pool's prebuilt C view: live, with functions that read a backend's
/// state when the plugin asks (ABI 1.3's `pick_pool`), or else copied onto the stack with every
/// backend's active connections and health refreshed. It then checks the answer: an index out of range or of a backend marked
/// unhealthy is a fault, counted and logged (rate-limited), and that client is served by the
/// fallback policy instead.
public final class PluginPolicy: LoadBalancingPolicy {
    public let name: String
    private let plugin: PluginLibrary
    private let instance: PluginInstance
    private let fallback: any LoadBalancingPolicy
    private let faults: PluginFaults

    /// Creates an instance with `spec`'s configuration; throws with the plugin's own message if it
    /// refuses it.
    public init(
        plugin: PluginLibrary,
        spec: PolicySpec,
        fallback: any LoadBalancingPolicy,
        faults: PluginFaults
    ) throws(L4LBError) {
        self.name = plugin.name
        self.plugin = plugin
        self.fallback = fallback
        self.faults = faults
        let configuration = Array((spec.configuration ?? "").utf8)
        var error = [CChar](repeating: 0, count: 512)
        let created = configuration.withUnsafeBufferPointer { config in
            error.withUnsafeMutableBufferPointer { error in
                config.withMemoryRebound(to: CChar.self) { config in
                    plugin.descriptor.instance_new(config.baseAddress, config.count, error.baseAddress, error.count)
                }
            }
        }
        guard let created else {
            let bytes = error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            let message = String(decoding: bytes, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
            throw L4LBError(
                .invalidPolicyConfiguration,
                "policy '\(plugin.name)' (\(plugin.path)) refused its configuration: \(message.isEmpty ? "no reason given" : message)"
            )
        }
        self.instance = PluginInstance(pointer: created, destroy: plugin.descriptor.instance_destroy)
    }

    public func makeSelector(for pool: BackendPool) -> any BackendSelector {
        let view = PluginPoolView(pool: pool)
        if let poolChanged = self.plugin.descriptor.pool_changed {
            poolChanged(self.instance.pointer, view.entries.baseAddress, view.entries.count)
        }
        return PluginSelector(
            plugin: self.plugin,
            instance: self.instance,
            view: view,
            fallback: self.fallback.makeSelector(for: pool),
            faults: self.faults
        )
    }

    public func connectionOpened(to backend: Backend) {
        guard let hook = self.plugin.descriptor.connection_opened else { return }
        PluginPoolView.withEntry(for: backend) { hook(self.instance.pointer, &$0) }
    }

    public func connectionClosed(to backend: Backend) {
        guard let hook = self.plugin.descriptor.connection_closed else { return }
        PluginPoolView.withEntry(for: backend) { hook(self.instance.pointer, &$0) }
    }
}

/// Owns a plugin instance; destroys it when the last policy or selector using it is gone, which is
/// after the last pick on it (routing tables hold their selectors).
final class PluginInstance: @unchecked Sendable {
    // @unchecked: the pointer is the plugin's, and the ABI requires its functions to be thread-safe.
    let pointer: UnsafeMutableRawPointer
    private let destroy: @convention(c) (UnsafeMutableRawPointer?) -> Void

    init(pointer: UnsafeMutableRawPointer, destroy: @escaping @convention(c) (UnsafeMutableRawPointer?) -> Void) {
        self.pointer = pointer
        self.destroy = destroy
    }

    deinit {
        self.destroy(self.pointer)
    }
}

/// Faults of plugins (bad pick answers), counted for the metrics endpoint and logged at most once
/// a second.
public final class PluginFaults: Sendable {
    private let count = ManagedAtomic<Int>(0)
    private let log = RateLimitedLog()
    private let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    public var total: Int { self.count.load(ordering: .relaxed) }

    func record(plugin: String, answer: Int64, poolSize: Int) {
        self.count.wrappingIncrement(ordering: .relaxed)
        self.log.warning(
            self.logger,
            "policy plugin fault: pick answered an index that is out of range or not healthy; the client is served by round-robin",
            metadata: ["plugin": "\(plugin)", "answer": "\(answer)", "pool": "\(poolSize)"]
        )
    }
}

/// The pool as C sees it, built once per pool snapshot: one `l4lb_backend` per backend, whose name
/// (`host:port`) and region point into one block of bytes that the view owns, so that a pick hands
/// the plugin C strings without building any. The strings are the plugin adapter's business alone:
/// `Backend` knows nothing of C.
///
/// The entries stay at one address for the view's life: ABI 1.3 promises a plugin that the array a
/// pick reads is the one `pool_changed` was given, so that it can recognise the pool.
final class PluginPoolView: @unchecked Sendable {
    // @unchecked: `entries`, `live` and `text` are written only in init and freed in deinit; the
    // selector that reads them keeps the view alive.
    let pool: BackendPool
    /// The backends as `pool_changed` sees them (active connections and health as of then).
    let entries: UnsafeMutableBufferPointer<l4lb_backend>
    /// Each backend's live state, at an address a pick's `l4lb_pool` can point to; valid while
    /// `pool` lives, which this view keeps.
    let live: UnsafeMutableBufferPointer<BackendLiveState>
    private let text: UnsafeMutableBufferPointer<CChar>

    init(pool: BackendPool) {
        self.pool = pool
        let live = UnsafeMutableBufferPointer<BackendLiveState>.allocate(capacity: max(pool.count, 1))
        for (index, state) in pool.liveStates.enumerated() { (live.baseAddress! + index).initialize(to: state) }
        self.live = UnsafeMutableBufferPointer(rebasing: live[0..<pool.count])
        let strings = pool.backends.map { (Array($0.address.description.utf8), Array(($0.region ?? "").utf8)) }
        let size = strings.reduce(0) { $0 + $1.0.count + $1.1.count }
        let text = UnsafeMutableBufferPointer<CChar>.allocate(capacity: max(size, 1))
        var offset = 0
        func place(_ bytes: [UInt8]) -> l4lb_string {
            let start = text.baseAddress! + offset
            for (index, byte) in bytes.enumerated() { start[index] = CChar(bitPattern: byte) }
            offset += bytes.count
            return l4lb_string(data: UnsafePointer(start), length: bytes.count)
        }
        let entries = UnsafeMutableBufferPointer<l4lb_backend>.allocate(capacity: max(pool.count, 1))
        for (index, (backend, strings)) in zip(pool.backends, strings).enumerated() {
            var entry = Self.entry(for: backend)
            entry.name = place(strings.0)
            entry.region = place(strings.1)
            (entries.baseAddress! + index).initialize(to: entry)
        }
        self.entries = UnsafeMutableBufferPointer(rebasing: entries[0..<pool.count])
        self.text = text
    }

    deinit {
        // All three buffers hold trivial values: nothing to deinitialize.
        UnsafeMutableRawPointer(self.entries.baseAddress)?.deallocate()
        UnsafeMutableRawPointer(self.live.baseAddress)?.deallocate()
        self.text.deallocate()
    }

    /// `backend` as C sees it, without its name and region.
    private static func entry(for backend: Backend) -> l4lb_backend {
        var entry = l4lb_backend()
        entry.address = Self.address(ClientAddress(backend.socketAddress))
        entry.weight = UInt32(backend.weight)
        entry.active_connections = UInt64(max(0, backend.activeConnections))
        entry.healthy = !backend.isRetired
        return entry
    }

    /// Calls `body` with `backend` as C sees it, its strings valid only during the call: for the
    /// connection hooks, which few plugins have.
    static func withEntry(for backend: Backend, _ body: (inout l4lb_backend) -> Void) {
        var entry = Self.entry(for: backend)
        var name = backend.address.description
        var region = backend.region ?? ""
        name.withUTF8 { name in
            region.withUTF8 { region in
                name.withMemoryRebound(to: CChar.self) { name in
                    region.withMemoryRebound(to: CChar.self) { region in
                        entry.name = l4lb_string(data: name.baseAddress, length: name.count)
                        entry.region = l4lb_string(data: region.baseAddress, length: region.count)
                        body(&entry)
                    }
                }
            }
        }
    }

    static func address(_ client: ClientAddress) -> l4lb_address {
        var address = l4lb_address()
        address.family = client.family.rawValue
        address.port = client.port
        client.withAddressBytes { source in
            withUnsafeMutableBytes(of: &address.bytes) { target in
                target.copyMemory(from: UnsafeRawBufferPointer(rebasing: source.prefix(16)))
            }
        }
        return address
    }
}

/// The plugin's `explain` (ABI 1.2), as Swift imports it.
typealias PluginExplainFunction =
    @convention(c) (
        UnsafeMutableRawPointer?, UnsafePointer<l4lb_address>?, UnsafePointer<l4lb_backend>?, Int,
        UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>?
    ) -> Int64

/// Serves picks for one pool through the plugin. Locking contract: none of l4lb's; whatever the
/// plugin's pick does (the ABI requires it to be thread-safe and non-blocking).
final class PluginSelector: BackendSelector, @unchecked Sendable {
    // @unchecked: immutable after init; the plugin instance is thread-safe by contract.
    private let pick:
        @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<l4lb_address>?, UnsafePointer<l4lb_backend>?, Int) ->
            Int64
    private let pickPool:
        (@convention(c) (UnsafeMutableRawPointer?, UnsafePointer<l4lb_address>?, UnsafePointer<l4lb_pool>?) -> Int64)?
    private let instance: PluginInstance
    private let view: PluginPoolView
    private let fallback: any BackendSelector
    private let faults: PluginFaults
    private let explainFunction: PluginExplainFunction?
    private let name: String
    private let abi: String

    init(
        plugin: PluginLibrary,
        instance: PluginInstance,
        view: PluginPoolView,
        fallback: any BackendSelector,
        faults: PluginFaults
    ) {
        self.pick = plugin.descriptor.pick
        self.pickPool = plugin.descriptor.pick_pool
        self.instance = instance
        self.view = view
        self.fallback = fallback
        self.faults = faults
        self.explainFunction = plugin.descriptor.explain
        self.name = plugin.name
        self.abi = "\(plugin.abiMajor).\(plugin.abiMinor)"
    }

    func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? {
        switch self.checkedPick(for: client, excluding: excluded) {
        case .backend(let index):
            return index
        case .none:
            return nil
        case .fault(let answer):
            self.faults.record(plugin: self.name, answer: answer, poolSize: self.view.pool.count)
            return self.fallback.pick(for: client, excluding: excluded)
        }
    }

    func checkedPick(for client: ClientAddress, excluding excluded: BackendExclusions) -> CheckedPick {
        guard self.view.live.count > 0 else { return .none }
        var address = PluginPoolView.address(client)
        let answer: Int64
        if let pickPool = self.pickPool {
            answer = LivePool.with(self.view, excluding: excluded) { pickPool(self.instance.pointer, &address, $0) }
        } else {
            answer = self.withEntries(excluding: excluded) { entries in
                self.pick(self.instance.pointer, &address, entries.baseAddress, entries.count)
            }
        }
        if answer == Int64(L4LB_PICK_NONE) { return .none }
        return self.isValid(answer, excluding: excluded) ? .backend(Int(answer)) : .fault(answer)
    }

    func explain(for client: ClientAddress, excluding excluded: BackendExclusions) -> PickExplanation {
        guard let explain = self.explainFunction else {
            return PickExplanation(
                steps: ["plugin \(self.name) (ABI \(self.abi)) does not explain its picks"],
                backend: nil
            )
        }
        guard self.view.pool.count > 0 else { return PickExplanation(steps: ["the pool is empty"], backend: nil) }
        var address = PluginPoolView.address(client)
        var text = [CChar](repeating: 0, count: Self.explanationCapacity)
        var length = 0
        let answer = self.withEntries(excluding: excluded) { entries in
            text.withUnsafeMutableBufferPointer { text in
                explain(
                    self.instance.pointer,
                    &address,
                    entries.baseAddress,
                    entries.count,
                    text.baseAddress,
                    text.count,
                    &length
                )
            }
        }
        let written = text.prefix(min(max(length, 0), text.count)).map { UInt8(bitPattern: $0) }
        var steps = String(decoding: written, as: UTF8.self).split(separator: "\n").map {
            String($0.prefix(Self.stepLimit))
        }
        if answer == Int64(L4LB_PICK_NONE) { return PickExplanation(steps: steps, backend: nil) }
        if self.isValid(answer, excluding: excluded) { return PickExplanation(steps: steps, backend: Int(answer)) }
        // The same rule as a pick: a bad answer is served by the fallback.
        let fallback = self.fallback.explain(for: client, excluding: excluded)
        steps.append("answered \(answer), not a healthy backend: a pick falls back to round-robin")
        return PickExplanation(steps: steps + fallback.steps, backend: fallback.backend)
    }

    /// Room for a plugin's explanation; a step is cut at `stepLimit` bytes.
    private static let explanationCapacity = 4096
    private static let stepLimit = 512

    /// Whether `answer` names a backend this client may be sent to (read from the view's live
    /// state: no reference counting on the pick's path).
    private func isValid(_ answer: Int64, excluding excluded: BackendExclusions) -> Bool {
        guard answer >= 0 && answer < Int64(self.view.live.count) else { return false }
        return BackendPool.isEligible(
            Int(answer),
            excluding: excluded,
            retired: self.view.live[Int(answer)].isRetired,
            panic: self.view.pool.panic.isOn
        )
    }

    /// Calls `body` with the pool as C sees it now, for a plugin without `pick_pool` and for
    /// `explain`: the prebuilt view with each backend's active connections and eligibility for this
    /// client, copied onto the stack.
    private func withEntries<Result>(
        excluding excluded: BackendExclusions,
        _ body: (UnsafeBufferPointer<l4lb_backend>) -> Result
    ) -> Result {
        let count = self.view.pool.count
        let template = self.view.entries
        let live = self.view.live
        // Read once per pick, not per backend.
        let panic = self.view.pool.panic.isOn
        return withUnsafeTemporaryAllocation(of: l4lb_backend.self, capacity: count) { entries in
            for index in 0..<count {
                var entry = template[index]
                entry.active_connections = UInt64(max(0, live[index].activeConnections))
                entry.healthy = BackendPool.isEligible(
                    index,
                    excluding: excluded,
                    retired: live[index].isRetired,
                    panic: panic
                )
                (entries.baseAddress! + index).initialize(to: entry)
            }
            defer { entries.baseAddress!.deinitialize(count: count) }
            return body(UnsafeBufferPointer(entries))
        }
    }
}

/// The pool of one pick as ABI 1.3's `l4lb_pool`: the view's entries in place, and two functions
/// that read one backend's live state when the plugin asks, so that a pick pays for the backends it
/// considers rather than for the whole pool.
enum LivePool {
    /// What the two functions read, through the pool's `context`: this pick's client and the view.
    private struct Pick {
        let live: UnsafeMutableBufferPointer<BackendLiveState>
        let excluded: BackendExclusions
        let panic: Bool
    }

    static func with<Result>(
        _ view: PluginPoolView,
        excluding excluded: BackendExclusions,
        _ body: (UnsafePointer<l4lb_pool>) -> Result
    ) -> Result {
        // The panic switch is read once per pick, not per backend.
        var pick = Pick(live: view.live, excluded: excluded, panic: view.pool.panic.isOn)
        return withUnsafePointer(to: &pick) { context in
            var pool = l4lb_pool(
                struct_size: UInt32(MemoryLayout<l4lb_pool>.size),
                backends: UnsafePointer(view.entries.baseAddress),
                count: view.entries.count,
                active_connections: Self.activeConnections,
                healthy: Self.healthy,
                context: UnsafeRawPointer(context)
            )
            return withUnsafePointer(to: &pool) { body($0) }
        }
    }

    /// This pick's state behind `pool`, and `index` if it names one of its backends: a plugin's
    /// index is not trusted.
    private static func pick(_ pool: UnsafePointer<l4lb_pool>?, _ index: Int) -> UnsafePointer<Pick>? {
        guard let context = pool?.pointee.context else { return nil }
        let pick = context.assumingMemoryBound(to: Pick.self)
        return index >= 0 && index < pick.pointee.live.count ? pick : nil
    }

    private static let activeConnections: @convention(c) (UnsafePointer<l4lb_pool>?, Int) -> UInt64 = {
        pool,
        index in
        guard let pick = LivePool.pick(pool, index) else { return 0 }
        return UInt64(max(0, pick.pointee.live[index].activeConnections))
    }

    private static let healthy: @convention(c) (UnsafePointer<l4lb_pool>?, Int) -> Bool = { pool, index in
        guard let pick = LivePool.pick(pool, index) else { return false }
        return BackendPool.isEligible(
            index,
            excluding: pick.pointee.excluded,
            retired: pick.pointee.live[index].isRetired,
            panic: pick.pointee.panic
        )
    }
}
