import Foundation
import LBKit

/// Renders l4lb's counters in the Prometheus text format (version 0.0.4).
///
/// The data plane keeps plain atomics (a pick or a connection costs one relaxed increment, no
/// metrics-library call); each scrape reads them and writes the text directly, in time linear in
/// the pool (a registry of labelled series cost 7 s per scrape at 6,000 backends). Reading afresh
/// each time also makes a removed backend's series disappear.
public final class MetricsExporter: Sendable {
    public struct Sources: Sendable {
        public var router: Router
        public var server: ProxyServer
        public var startedAt: Date
        public var controlPlane: (any ControlPlaneStatus)?
        public var pluginFaults: PluginFaults?
        /// Closed connections by reason; the observer the proxy was given.
        public var closes: ConnectionCloseCounts?

        public init(
            router: Router,
            server: ProxyServer,
            startedAt: Date = Date(),
            controlPlane: (any ControlPlaneStatus)? = nil,
            pluginFaults: PluginFaults? = nil,
            closes: ConnectionCloseCounts? = nil
        ) {
            self.router = router
            self.server = server
            self.startedAt = startedAt
            self.controlPlane = controlPlane
            self.pluginFaults = pluginFaults
            self.closes = closes
        }
    }

    private let sources: Sources

    public init(sources: Sources) {
        self.sources = sources
    }

    /// The shadow policy's counts: enough for a dashboard to show its share per backend and region
    /// and how often it agrees with the active policy.
    private func renderShadow(
        _ shadow: ShadowReport,
        counter: (String, String, [(String, String)], Int) -> Void,
        gauge: (String, String, [(String, String)], Double) -> Void
    ) {
        let policy = [("policy", shadow.policy)]
        gauge(
            "l4lb_shadow_active",
            "The shadow policy installed (value 1; 0 once dropped after a fault).",
            policy,
            shadow.dropped ? 0 : 1
        )
        gauge(
            "l4lb_shadow_sample_ratio",
            "Share of new clients the shadow policy is asked about.",
            policy,
            Double(shadow.samplePercent) / 100
        )
        counter("l4lb_shadow_sampled_total", "Clients the shadow policy was asked about.", policy, shadow.sampled)
        counter(
            "l4lb_shadow_agreed_total",
            "Sampled clients for whom the shadow picked the active policy's backend.",
            policy,
            shadow.agreed
        )
        counter(
            "l4lb_shadow_no_backend_total",
            "Sampled clients for whom the shadow picked no backend.",
            policy,
            shadow.pickedNone
        )
        counter(
            "l4lb_shadow_faults_total",
            "Shadow picks that answered an invalid index (the shadow is then dropped).",
            policy,
            shadow.faults
        )
        for backend in shadow.backends where backend.inPool {
            counter(
                "l4lb_shadow_picks_total",
                "Sampled clients the shadow policy would have sent to each backend.",
                policy + [("backend", backend.address), ("region", backend.region ?? "")],
                backend.picks
            )
        }
    }

    public func render() -> [UInt8] {
        var text = PrometheusText()
        let table = self.sources.router.table
        let server = self.sources.server

        func counter(_ name: String, _ help: String, _ labels: [(String, String)] = [], _ value: Int) {
            text.add(name, type: "counter", help: help, labels: labels, value: "\(max(0, value))")
        }
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = [], _ value: Double) {
            text.add(name, type: "gauge", help: help, labels: labels, value: PrometheusText.format(value))
        }

        gauge(
            "l4lb_uptime_seconds",
            "Seconds since l4lb started.",
            [],
            Date().timeIntervalSince(self.sources.startedAt)
        )
        gauge("l4lb_connections_active", "Client connections open now.", [], Double(server.activeConnections))
        counter("l4lb_connections_accepted_total", "Client connections accepted.", [], server.acceptedConnections)
        counter(
            "l4lb_accept_paused_total",
            "Times accepting paused because --max-connections were open.",
            [],
            server.acceptPauses
        )
        counter(
            "l4lb_accept_handovers_total",
            "Clients the relay thread that accepted them handed to a less-loaded relay thread.",
            [],
            server.acceptHandOvers
        )
        counter(
            "l4lb_backend_connect_no_free_port_total",
            "Backend connects that found no free local port (l4lb's shortage; no backend is charged).",
            [],
            server.noFreePorts
        )
        counter(
            "l4lb_relay_stale_events_total",
            "epoll events dropped because their socket closed earlier in the same batch.",
            [],
            server.staleEvents
        )
        if let closes = self.sources.closes {
            for reason in ConnectionCloseReason.allCases {
                counter(
                    "l4lb_connections_closed_total",
                    "Client connections closed, by why they ended (the access log's reason).",
                    [("reason", reason.rawValue)],
                    closes.count(reason)
                )
            }
        }
        gauge(
            "l4lb_panic_mode",
            "1 while every backend is retired and all are tried.",
            [],
            table.pool.panic.isOn ? 1 : 0
        )
        gauge("l4lb_backends", "Backends in the pool.", [], Double(table.pool.count))

        for backend in table.pool.backends {
            let labels = [("backend", backend.address.description)]
            let counters = backend.counters
            gauge(
                "l4lb_backend_up",
                "1 if the backend gets clients, 0 if it is retired.",
                labels,
                backend.isRetired ? 0 : 1
            )
            gauge(
                "l4lb_backend_connections_active",
                "Connections open or connecting to the backend.",
                labels,
                Double(backend.activeConnections)
            )
            counter(
                "l4lb_backend_connections_total",
                "Connections picked for the backend.",
                labels,
                counters.totalConnections
            )
            counter(
                "l4lb_backend_connect_failures_total",
                "Connects to the backend that failed.",
                labels,
                counters.connectFailures
            )
            counter(
                "l4lb_backend_bytes_from_clients_total",
                "Bytes relayed from clients to the backend (counted at close).",
                labels,
                counters.bytesFromClients
            )
            counter(
                "l4lb_backend_bytes_to_clients_total",
                "Bytes relayed from the backend to clients (counted at close).",
                labels,
                counters.bytesFromBackend
            )
            counter(
                "l4lb_backend_retirements_total",
                "Times the backend was retired.",
                labels,
                backend.health.retirementCount
            )
            counter(
                "l4lb_backend_recoveries_total",
                "Times the backend came back.",
                labels,
                backend.health.recoveryCount
            )
        }

        for (policy, picks) in self.sources.router.picksByPolicy.sorted(by: { $0.key < $1.key }) {
            counter("l4lb_policy_picks_total", "Backend picks made by each policy.", [("policy", policy)], picks)
        }
        gauge("l4lb_policy_active", "The policy in force (value 1).", [("policy", table.policy.name)], 1)
        // Instances run the same pool exactly when their fingerprints match: an alert counts the
        // distinct values across instances.
        gauge(
            "l4lb_pool_info",
            "The pool in use, by its fingerprint (value 1).",
            [("fingerprint", PoolFingerprint.of(table.pool.specs))],
            1
        )
        if let shadow = table.shadow?.shadow.report(pool: table.pool) {
            self.renderShadow(shadow, counter: counter, gauge: gauge)
        }
        if let faults = self.sources.pluginFaults {
            counter("l4lb_plugin_faults_total", "Plugin picks that answered an invalid index.", [], faults.total)
        }
        if let controlPlane = self.sources.controlPlane {
            gauge(
                "l4lb_redis_connected",
                "1 while the Redis control plane is connected.",
                [],
                controlPlane.isConnected ? 1 : 0
            )
            counter(
                "l4lb_redis_connection_failures_total",
                "Redis connections lost and connect attempts that failed.",
                [],
                controlPlane.connectionFailures
            )
            counter(
                "l4lb_control_messages_refused_total",
                "Control messages and key values refused as bad input.",
                [],
                controlPlane.refusedMessages
            )
            if let version = controlPlane.poolVersion {
                gauge("l4lb_pool_version", "The shared pool's version this instance runs.", [], Double(version))
            }
            counter(
                "l4lb_control_changes_applied_total",
                "Pool and policy changes applied from Redis.",
                [],
                controlPlane.appliedChanges
            )
        }
        return text.rendered()
    }
}

/// The Prometheus text format, written directly: each family's HELP and TYPE once, then its series
/// in the order they were added; label values escaped as the format asks.
struct PrometheusText {
    private var families: [String: (type: String, help: String, lines: [String])] = [:]
    private var order: [String] = []

    mutating func add(_ name: String, type: String, help: String, labels: [(String, String)], value: String) {
        let series =
            labels.isEmpty
            ? name : name + "{" + labels.map { "\($0.0)=\"\(Self.escaped($0.1))\"" }.joined(separator: ",") + "}"
        if self.families[name] == nil {
            self.families[name] = (type, help, [])
            self.order.append(name)
        }
        self.families[name]!.lines.append(series + " " + value)
    }

    func rendered() -> [UInt8] {
        var output = ""
        for name in self.order {
            guard let family = self.families[name] else { continue }
            output += "# HELP \(name) \(family.help)\n# TYPE \(name) \(family.type)\n"
            for line in family.lines {
                output += line
                output += "\n"
            }
        }
        return Array(output.utf8)
    }

    static func escaped(_ value: String) -> String {
        var result = ""
        for character in value {
            switch character {
            case "\\": result += "\\\\"
            case "\"": result += "\\\""
            case "\n": result += "\\n"
            default: result.append(character)
            }
        }
        return result
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}
