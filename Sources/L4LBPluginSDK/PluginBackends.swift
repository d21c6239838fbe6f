internal import CLBPolicy

/// The pool as a plugin sees it in one call: a view of l4lb's own array, valid only during that call
/// (copy what you keep: `name`, `region`). Reading it allocates nothing, except `name` and `region`.
public struct PluginBackends: RandomAccessCollection, @unchecked Sendable {
    // @unchecked: a view of memory l4lb owns for the duration of one call; never stored by the SDK.
    let entries: UnsafeBufferPointer<l4lb_backend>

    init(_ entries: UnsafeBufferPointer<l4lb_backend>) {
        self.entries = entries
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { self.entries.count }

    public subscript(position: Int) -> PluginBackend {
        PluginBackend(entry: self.entries[position])
    }

    /// The backends a pick may answer.
    public var healthyCount: Int { self.entries.reduce(0) { $0 + ($1.healthy ? 1 : 0) } }
}

/// One backend of the pool.
public struct PluginBackend: @unchecked Sendable {
    // @unchecked: its strings point into memory l4lb owns for the duration of one call.
    let entry: l4lb_backend

    /// "host:port" as the operator wrote it.
    public var name: String { Self.string(self.entry.name) }
    /// The region attribute; "" when it has none.
    public var region: String { Self.string(self.entry.region) }
    /// The resolved address l4lb connects to.
    public var address: PluginAddress { PluginAddress(self.entry.address) }
    /// 1-256.
    public var weight: Int { Int(self.entry.weight) }
    /// Open or connecting connections now (a snapshot).
    public var activeConnections: Int { Int(clamping: self.entry.active_connections) }
    /// False when the backend is retired or already failed for this client: do not pick it.
    public var isHealthy: Bool { self.entry.healthy }

    /// Whether the region is `bytes`, compared without building a String (for the hot path).
    public func regionIs(_ bytes: some Collection<UInt8>) -> Bool {
        Self.equals(self.entry.region, bytes)
    }

    /// Whether the region is `region`.
    public func regionIs(_ region: String) -> Bool {
        Self.equals(self.entry.region, region.utf8)
    }

    private static func equals(_ string: l4lb_string, _ bytes: some Collection<UInt8>) -> Bool {
        guard string.length == bytes.count else { return false }
        guard let data = string.data else { return bytes.isEmpty }
        return UnsafeRawBufferPointer(start: data, count: string.length).elementsEqual(bytes)
    }

    private static func string(_ string: l4lb_string) -> String {
        guard let data = string.data, string.length > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: string.length), as: UTF8.self)
    }
}
