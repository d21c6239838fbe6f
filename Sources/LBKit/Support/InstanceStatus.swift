import Foundation

/// This instance's state as JSON: what the `status:<instance>` key and `/status` hold.
///
/// Codable values written by JSONEncoder, in linear time: the JSONSerialization of dictionaries it
/// replaces (sorted keys, bridged values) took seconds for a pool of 10,000 backends, every 5 s, on
/// the control thread, and held up every pool change behind it.
public enum InstanceStatus {
    struct Document: Encodable {
        var instance: String
        var uptimeSeconds: Int
        var policy: String
        var panic: Bool
        var redisConnected: Bool?
        var backends: [BackendEntry]

        enum CodingKeys: String, CodingKey {
            case instance
            case uptimeSeconds = "uptime_seconds"
            case policy
            case panic
            case redisConnected = "redis_connected"
            case backends
        }
    }

    struct BackendEntry: Encodable {
        var address: String
        var weight: Int
        var region: String?
        var state: String
        var activeConnections: Int
        var totalConnections: Int
        var connectFailures: Int

        enum CodingKeys: String, CodingKey {
            case address
            case weight
            case region
            case state
            case activeConnections = "active_connections"
            case totalConnections = "total_connections"
            case connectFailures = "connect_failures"
        }
    }

    public static func json(instance: String, startedAt: Date, router: Router, redisConnected: Bool?) -> String {
        let table = router.table
        let document = Document(
            instance: instance,
            uptimeSeconds: Int(Date().timeIntervalSince(startedAt)),
            policy: table.policy.name,
            panic: table.pool.panic.isOn,
            redisConnected: redisConnected,
            backends: table.pool.backends.map { backend in
                BackendEntry(
                    address: backend.address.description,
                    weight: backend.weight,
                    region: backend.region,
                    state: backend.isRetired ? "retired" : "healthy",
                    activeConnections: backend.activeConnections,
                    totalConnections: backend.counters.totalConnections,
                    connectFailures: backend.counters.connectFailures
                )
            }
        )
        return JSONText.encode(document)
    }
}
