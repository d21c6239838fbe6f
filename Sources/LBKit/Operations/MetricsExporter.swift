import Foundation
import Prometheus

/// Renders l4lb's counters in the Prometheus text format with swift-prometheus.
///
/// The data plane keeps plain atomics (a pick or a connection costs one relaxed increment, no
/// metrics-library call); each scrape copies them into a fresh collector registry and lets it do
/// the formatting. A fresh registry per scrape also makes a removed backend's series disappear.
public final class MetricsExporter: Sendable {
    public struct Sources: Sendable {
        public var router: Router
        public var server: ProxyServer
        public var startedAt: Date
        public var controlPlane: ControlPlaneStatistics?
        public var pluginFaults: PluginFaults?

        public init(
            router: Router,
            server: ProxyServer,
            startedAt: Date = Date(),
            controlPlane: ControlPlaneStatistics? = nil,
            pluginFaults: PluginFaults? = nil
        ) {
            self.router = router
            self.server = server
            self.startedAt = startedAt
            self.controlPlane = controlPlane
            self.pluginFaults = pluginFaults
        }
    }

    private let sources: Sources

    public init(sources: Sources) {
        self.sources = sources
    }

    public func render() -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        let table = self.sources.router.table
        let server = self.sources.server

        func counter(_ name: String, _ help: String, _ labels: [(String, String)] = [], _ value: Int) {
            let descriptor = MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
            registry.makeCounter(descriptor: descriptor, labels: labels).increment(by: Int64(max(0, value)))
        }
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = [], _ value: Double) {
            let descriptor = MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
            registry.makeGauge(descriptor: descriptor, labels: labels).set(to: value)
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
                "l4lb_control_messages_refused_total",
                "Control messages and key values refused as bad input.",
                [],
                controlPlane.refusedMessages
            )
            counter(
                "l4lb_control_changes_applied_total",
                "Pool and policy changes applied from Redis.",
                [],
                controlPlane.appliedChanges
            )
        }
        return registry.emitToBuffer()
    }
}
