// Public: the views below are @inlinable, so that a plugin's pick reads l4lb's C array directly
// (each field a load, inlined into the plugin's loop) rather than through a call per field.
public import CLBPolicy

#if canImport(Glibc)
import Glibc
#endif

/// The pool as a plugin sees it in one call: a view of l4lb's own array, valid only during that call
/// (copy what you keep: `name`, `region`). Reading it allocates nothing, except `name` and `region`.
@frozen public struct PluginBackends: RandomAccessCollection, @unchecked Sendable {
    // @unchecked: a view of memory l4lb owns for the duration of one call; never stored by the SDK.
    @usableFromInline let entries: UnsafeBufferPointer<l4lb_backend>

    init(_ entries: UnsafeBufferPointer<l4lb_backend>) {
        self.entries = entries
    }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { self.entries.count }

    @inlinable public subscript(position: Int) -> PluginBackend {
        PluginBackend(entry: self.entries[position])
    }

    /// The backends a pick may answer.
    @inlinable public var healthyCount: Int { self.entries.reduce(0) { $0 + ($1.healthy ? 1 : 0) } }
}

/// One backend of the pool.
@frozen public struct PluginBackend: @unchecked Sendable {
    // @unchecked: its strings point into memory l4lb owns for the duration of one call.
    @usableFromInline let entry: l4lb_backend

    @inlinable init(entry: l4lb_backend) {
        self.entry = entry
    }

    /// "host:port" as the operator wrote it.
    public var name: String { Self.string(self.entry.name) }
    /// The region attribute; "" when it has none.
    public var region: String { Self.string(self.entry.region) }
    /// The resolved address l4lb connects to.
    public var address: PluginAddress { PluginAddress(self.entry.address) }
    /// 1-256.
    @inlinable public var weight: Int { Int(self.entry.weight) }
    /// Open or connecting connections now (a snapshot).
    @inlinable public var activeConnections: Int { Int(clamping: self.entry.active_connections) }
    /// False when the backend is retired or already failed for this client: do not pick it.
    @inlinable public var isHealthy: Bool { self.entry.healthy }

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
