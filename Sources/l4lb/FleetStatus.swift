import Foundation
import LBControlPlane
import LBKit

/// What `l4lb ctl instances` shows: every live instance's status key set against the shared pool.
/// Reading is I/O (`read`); the report is a pure function of what was read and the time.
struct FleetStatus {
    struct Pool {
        var fingerprint: String?
        var count: Int?
        var version: Int?
        var changedAt: Date?
    }

    var pool: Pool
    var instances: [InstanceStatus.Document]

    /// Reads `serverPool`, its version, and every `status:*` key (SCAN, bounded).
    static func read(_ connection: RedisConnection, names: RedisNames) throws(RedisConnection.Failure) -> FleetStatus {
        var pool = Pool()
        if let text = try connection.command(["GET", names.serverPoolKey]).text,
            let specs = try? PoolDocument.decode(text)
        {
            pool.fingerprint = PoolFingerprint.of(specs)
            pool.count = specs.count
        }
        pool.version = try connection.command(["HGET", names.serverPoolMetaKey, "version"]).text.flatMap { Int($0) }
        pool.changedAt = try connection.command(["HGET", names.serverPoolMetaKey, "changed_at"]).text
            .flatMap { Double($0) }.map { Date(timeIntervalSince1970: $0) }

        var keys: [String] = []
        var cursor = "0"
        // At most 1,000 rounds of 1,000: a million keys scanned is the end of patience, not of Redis.
        for _ in 0..<1_000 {
            let reply = try connection.command([
                "SCAN", cursor, "MATCH", names.statusKey(instance: "*"), "COUNT", "1000",
            ])
            guard case .array(let parts) = reply, parts.count == 2, let next = parts[0].text,
                case .array(let found) = parts[1]
            else { break }
            keys += found.compactMap(\.text)
            cursor = next
            if cursor == "0" { break }
        }
        var instances: [InstanceStatus.Document] = []
        for key in Set(keys).sorted() {
            guard let text = try connection.command(["GET", key]).text,
                let document = try? JSONDecoder().decode(InstanceStatus.Document.self, from: Data(text.utf8))
            else { continue }
            instances.append(document)
        }
        return FleetStatus(pool: pool, instances: instances)
    }

    /// Whether `instance` runs the pool in the key (unknown when the key is missing or broken).
    func agrees(_ instance: InstanceStatus.Document) -> Bool? {
        guard let fingerprint = self.pool.fingerprint else { return nil }
        return instance.poolFingerprint == fingerprint
    }

    /// Since when `instance` has disagreed: the later of the key's last change and the instance's
    /// own last pool change (whichever moved away from the other last).
    func disagreeingSince(_ instance: InstanceStatus.Document) -> Date? {
        let installed = instance.poolSince.flatMap(Timestamp.parse)
        switch (self.pool.changedAt, installed) {
        case (let changed?, let installed?): return max(changed, installed)
        case (let changed?, nil): return changed
        case (nil, let installed?): return installed
        case (nil, nil): return nil
        }
    }

    func report(now: Date) -> String {
        var lines: [String] = []
        let pool = self.pool
        if let count = pool.count {
            var line = "serverPool: \(count) backend\(count == 1 ? "" : "s")"
            if let version = pool.version { line += ", version \(version)" }
            if let changed = pool.changedAt { line += ", changed \(Self.age(now.timeIntervalSince(changed))) ago" }
            lines.append(line)
        } else {
            lines.append("serverPool: missing or not valid")
        }
        var rows = [["INSTANCE", "UPTIME", "POLICY", "BACKENDS", "RETIRED", "POOL", "REDIS"]]
        var differing = 0
        for instance in self.instances {
            var poolColumn = instance.poolVersion.map { "v\($0) " } ?? ""
            switch self.agrees(instance) {
            case true?:
                poolColumn += "agrees"
            case false?:
                differing += 1
                let since = self.disagreeingSince(instance).map { " for \(Self.age(now.timeIntervalSince($0)))" } ?? ""
                poolColumn += "DIFFERS\(since)"
            case nil:
                poolColumn += "?"
            }
            let redis: String
            switch (instance.redisConnected, instance.redisLastContact.flatMap(Timestamp.parse)) {
            case (true?, _): redis = "connected"
            case (false?, let last?): redis = "lost, last heard \(Self.age(now.timeIntervalSince(last))) ago"
            default: redis = "-"
            }
            rows.append([
                instance.instance, Self.age(Double(instance.uptimeSeconds)), instance.policy,
                "\(instance.backends.count)", "\(instance.retired?.count ?? 0)", poolColumn, redis,
            ])
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let padded = zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }
            lines.append(padded.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
        lines.append(
            "\(self.instances.count) instance\(self.instances.count == 1 ? "" : "s") live, \(differing) with another pool"
        )
        return lines.joined(separator: "\n") + "\n"
    }

    /// 45s, 12m03s, 5h02m, 3d04h.
    static func age(_ seconds: Double) -> String {
        let total = max(0, Int(seconds))
        switch total {
        case ..<60: return "\(total)s"
        case ..<3600: return "\(total / 60)m" + String(format: "%02ds", total % 60)
        case ..<86_400: return "\(total / 3600)h" + String(format: "%02dm", total % 3600 / 60)
        default: return "\(total / 86_400)d" + String(format: "%02dh", total % 86_400 / 3600)
        }
    }
}
