import Foundation

/// This instance's state as JSON: what the `status:<instance>` key holds (and, later, `/status`).
public enum InstanceStatus {
    public static func json(instance: String, startedAt: Date, router: Router, redisConnected: Bool?) -> String {
        let table = router.table
        let backends: [[String: Any]] = table.pool.backends.map { backend in
            var entry: [String: Any] = [
                "address": backend.address.description,
                "weight": backend.weight,
                "state": backend.isRetired ? "retired" : "healthy",
                "active_connections": backend.activeConnections,
                "total_connections": backend.counters.totalConnections,
                "connect_failures": backend.counters.connectFailures,
            ]
            if let region = backend.region { entry["region"] = region }
            return entry
        }
        var object: [String: Any] = [
            "instance": instance,
            "uptime_seconds": Int(Date().timeIntervalSince(startedAt)),
            "policy": table.policy.name,
            "panic": table.pool.panic.isOn,
            "backends": backends,
        ]
        if let redisConnected { object["redis_connected"] = redisConnected }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
