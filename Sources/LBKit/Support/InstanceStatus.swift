import Foundation

/// This instance's state as JSON: what the `status:<instance>` key and `/status` hold, and what
/// `l4lb ctl instances` reads back from every instance's key.
///
/// Codable values written by JSONEncoder, in linear time: the JSONSerialization of dictionaries it
/// replaces (sorted keys, bridged values) took seconds for a pool of 10,000 backends, every 5 s, on
/// the control thread, and held up every pool change behind it.
public enum InstanceStatus {
    public struct Document: Codable, Sendable {
        public var instance: String
        public var uptimeSeconds: Int
        public var policy: String
        public var panic: Bool
        public var redisConnected: Bool?
        /// `PoolFingerprint` of the pool in use: equal on two instances exactly when they run the
        /// same pool.
        public var poolFingerprint: String?
        /// The version of the shared pool (the counter beside `serverPool`) this instance last read
        /// or wrote, when it runs one from Redis.
        public var poolVersion: Int?
        /// When the pool in use was installed (ISO 8601).
        public var poolSince: String?
        /// The retired backends' addresses.
        public var retired: [String]?
        /// When the control plane last heard from Redis (ISO 8601).
        public var redisLastContact: String?
        /// The shadow policy's counts, when one is installed (`setShadowPolicy`).
        public var shadow: ShadowReport?
        /// The policy plugins loaded, each with every version loaded so far.
        public var plugins: [PluginEntry]?
        public var backends: [BackendEntry]

        enum CodingKeys: String, CodingKey {
            case instance
            case uptimeSeconds = "uptime_seconds"
            case policy
            case panic
            case redisConnected = "redis_connected"
            case poolFingerprint = "pool_fingerprint"
            case poolVersion = "pool_version"
            case poolSince = "pool_since"
            case retired
            case redisLastContact = "redis_last_contact"
            case shadow
            case plugins
            case backends
        }
    }

    public struct BackendEntry: Codable, Sendable {
        public var address: String
        public var weight: Int
        public var region: String?
        public var state: String
        public var activeConnections: Int
        public var totalConnections: Int
        public var connectFailures: Int
        /// Bytes relayed to and from the backend (counted as connections close).
        public var bytesFromClients: Int?
        public var bytesToClients: Int?
        /// Why the backend was last retired or restored.
        public var reason: String?

        enum CodingKeys: String, CodingKey {
            case address
            case weight
            case region
            case state
            case activeConnections = "active_connections"
            case totalConnections = "total_connections"
            case connectFailures = "connect_failures"
            case bytesFromClients = "bytes_from_clients"
            case bytesToClients = "bytes_to_clients"
            case reason
        }
    }

    /// A plugin and its versions, oldest first.
    public struct PluginEntry: Codable, Sendable, Equatable {
        public var name: String
        public var path: String
        public var versions: [PluginVersionEntry]
    }

    public struct PluginVersionEntry: Codable, Sendable, Equatable {
        public var sha256: String
        public var abi: String
        public var loadedAt: String
        /// The version new instances are made from.
        public var current: Bool

        enum CodingKeys: String, CodingKey {
            case sha256
            case abi
            case loadedAt = "loaded_at"
            case current
        }
    }

    public static func pluginEntries(_ plugins: [PluginVersions]) -> [PluginEntry] {
        plugins.map { versions in
            let current = versions.current.sha256
            return PluginEntry(
                name: versions.name,
                path: versions.path,
                versions: versions.loaded.map {
                    PluginVersionEntry(
                        sha256: $0.sha256,
                        abi: "\($0.abiMajor).\($0.abiMinor)",
                        loadedAt: Timestamp.iso8601($0.loadedAt),
                        current: $0.sha256 == current
                    )
                }
            )
        }
    }

    public static func document(
        instance: String,
        startedAt: Date,
        router: Router,
        controlPlane: (any ControlPlaneStatus)?,
        plugins: [PluginVersions] = []
    ) -> Document {
        let table = router.table
        let pool = table.pool
        return Document(
            instance: instance,
            uptimeSeconds: Int(Date().timeIntervalSince(startedAt)),
            policy: table.policy.name,
            panic: pool.panic.isOn,
            redisConnected: controlPlane?.isConnected,
            poolFingerprint: PoolFingerprint.of(pool.specs),
            poolVersion: controlPlane?.poolVersion,
            poolSince: Timestamp.iso8601(pool.builtAt),
            retired: pool.backends.filter(\.isRetired).map(\.address.description),
            redisLastContact: controlPlane?.lastContact.map(Timestamp.iso8601),
            shadow: table.shadow?.shadow.report(pool: pool),
            plugins: plugins.isEmpty ? nil : Self.pluginEntries(plugins),
            backends: pool.backends.map { backend in
                BackendEntry(
                    address: backend.address.description,
                    weight: backend.weight,
                    region: backend.region,
                    state: backend.isRetired ? "retired" : "healthy",
                    activeConnections: backend.activeConnections,
                    totalConnections: backend.counters.totalConnections,
                    connectFailures: backend.counters.connectFailures,
                    bytesFromClients: backend.counters.bytesFromClients,
                    bytesToClients: backend.counters.bytesFromBackend,
                    reason: backend.health.reason
                )
            }
        )
    }
}
