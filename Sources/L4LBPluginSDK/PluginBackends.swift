// Public: the views below are @inlinable, so that a plugin's pick reads l4lb's C array directly
// (each field a load, inlined into the plugin's loop) rather than through a call per field.
public import CLBPolicy

#if canImport(Glibc)
import Glibc
#endif

/// The pool as a plugin sees it in one call: a view of l4lb's own array, valid only during that call
/// (copy what you keep: `name`, `region`). Reading it allocates nothing, except `name` and `region`.
///
/// In a pick from an l4lb of ABI 1.3 the view is live: a backend's `activeConnections` and
/// `isHealthy` are read from l4lb when asked, so a pick that looks at a few backends of a large
/// pool costs what those few cost. From an older l4lb, every backend arrives copied, with the same
/// values.
@frozen public struct PluginBackends: RandomAccessCollection, @unchecked Sendable {
    // @unchecked: a view of memory l4lb owns for the duration of one call; never stored by the SDK.
    @usableFromInline let entries: UnsafeBufferPointer<l4lb_backend>
    /// The live pool of an ABI 1.3 pick, or nil when `entries` hold the state itself.
    @usableFromInline let live: UnsafePointer<l4lb_pool>?
    /// The pool's identity; see `identity`.
    @usableFromInline let poolIdentity: UnsafeRawPointer?

    /// The view `poolChanged` gets, or an older l4lb's pick gets (a copy, no identity).
    init(_ entries: UnsafeBufferPointer<l4lb_backend>, identified: Bool) {
        self.entries = entries
        self.live = nil
        self.poolIdentity = identified ? UnsafeRawPointer(entries.baseAddress) : nil
    }

    /// The view of an ABI 1.3 pick.
    init(live pool: UnsafePointer<l4lb_pool>) {
        self.entries = UnsafeBufferPointer(
            start: pool.pointee.backends,
            count: pool.pointee.backends == nil ? 0 : pool.pointee.count
        )
        self.live = pool
        self.poolIdentity = UnsafeRawPointer(pool.pointee.backends)
    }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { self.entries.count }

    @inlinable public subscript(position: Int) -> PluginBackend {
        PluginBackend(entry: self.entries[position], live: self.live, index: position)
    }

    /// The backends a pick may answer.
    @inlinable public var healthyCount: Int { self.reduce(0) { $0 + ($1.isHealthy ? 1 : 0) } }

    /// Which pool this is, for a plugin that builds tables in `poolChanged`: a pick whose `identity`
    /// equals the one `poolChanged` saw runs on that very pool (l4lb ABI 1.3), so the tables hold for
    /// it. nil when l4lb cannot promise that (a pick from an older l4lb): check against the pool.
    /// Compare only; the pointer is not for reading.
    @inlinable public var identity: UnsafeRawPointer? { self.poolIdentity }
}

/// One backend of the pool.
@frozen public struct PluginBackend: @unchecked Sendable {
    // @unchecked: its strings point into memory l4lb owns for the duration of one call.
    @usableFromInline let entry: l4lb_backend
    @usableFromInline let live: UnsafePointer<l4lb_pool>?
    @usableFromInline let index: Int

    @inlinable init(entry: l4lb_backend, live: UnsafePointer<l4lb_pool>? = nil, index: Int = 0) {
        self.entry = entry
        self.live = live
        self.index = index
    }

    /// "host:port" as the operator wrote it.
    public var name: String { Self.string(self.entry.name) }
    /// The region attribute; "" when it has none.
    public var region: String { Self.string(self.entry.region) }
    /// The resolved address l4lb connects to.
    public var address: PluginAddress { PluginAddress(self.entry.address) }
    /// 1-256.
    @inlinable public var weight: Int { Int(self.entry.weight) }
    /// Open or connecting connections now.
    @inlinable public var activeConnections: Int {
        guard let live = self.live, let read = live.pointee.active_connections else {
            return Int(clamping: self.entry.active_connections)
        }
        return Int(clamping: read(live, self.index))
    }
    /// False when the backend is retired or already failed for this client: do not pick it.
    @inlinable public var isHealthy: Bool {
        guard let live = self.live, let read = live.pointee.healthy else { return self.entry.healthy }
        return read(live, self.index)
    }

    /// Whether the region is `bytes`, compared without building a String or allocating (for the
    /// hot path). Concrete overloads, not one generic: a generic across the module boundary runs
    /// unspecialized and boxes its argument on every call.
    @inlinable public func regionIs(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let region = self.entry.region
        guard region.length == bytes.count else { return false }
        guard region.length > 0, let data = region.data, let other = bytes.baseAddress else { return true }
        return memcmp(data, other, region.length) == 0
    }

    @inlinable public func regionIs(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { self.regionIs($0) }
    }

    /// Whether the region is `region`.
    @inlinable public func regionIs(_ region: String) -> Bool {
        var region = region
        return region.withUTF8 { self.regionIs(UnsafeRawBufferPointer($0)) }
    }

    /// Whether the backend has a region attribute.
    @inlinable public var hasRegion: Bool { self.entry.region.length > 0 }

    private static func string(_ string: l4lb_string) -> String {
        guard let data = string.data, string.length > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: string.length), as: UTF8.self)
    }
}
