import Foundation
import LBControlPlane
import LBKit
import LBOperations
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Policies
import ServiceLifecycle

/// Builds l4lb from checked settings: the policies and plugins, the router with its first pool, the
/// Redis control plane, the data plane, the access log, the metrics and the admin endpoint, wired
/// together and not yet running.
///
/// The binary and every integration test call this one function, so that what the tests start is
/// what operators run. Nothing here listens, connects or starts a thread: `Application.start()`
/// does. Process-wide things (the logging system, the pid file, signals, systemd) stay with the
/// binary (`Runtime`).
func buildApplication(_ settings: RunCommand.Settings, logger: Logger) throws(L4LBError) -> Application {
    let catalog = PluginOptions.makeCatalog(directories: settings.pluginDirectories)
    let (policies, pluginFaults) = PluginOptions.makeRegistry(catalog: catalog, logger: logger)
    let router = Router(policy: try policies.makePolicy(settings.policy))
    try router.setOwnListeners(
        OwnListeners(settings.proxy.listen.compactMap { try? BackendResolver.resolveListen($0) })
    )
    try router.setPool(settings.proxy.backends)
    if let spec = settings.shadowPolicy {
        let shadow: any LoadBalancingPolicy
        do throws(L4LBError) {
            shadow = try policies.makePolicy(spec)
        } catch {
            throw L4LBError(error.code, "--shadow-policy: \(error.message)")
        }
        router.setShadow(
            ShadowPolicy(spec: spec, policy: shadow, samplePercent: settings.shadowSamplePercent, logger: logger)
        )
    }

    let controlPlane = settings.controlPlane.map {
        ControlPlane(
            configuration: $0,
            router: router,
            policies: policies,
            initialPolicy: settings.policy,
            initialShadow: settings.shadowPolicy,
            logger: logger
        )
    }
    let accessLog = settings.operations.accessLog.map {
        AccessLog(path: $0, format: settings.operations.accessLogFormat)
    }
    // The runtime owns the event loops (health probes, the admin endpoint), so that the admin
    // endpoint can outlive the proxy's drain.
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let closes = ConnectionCloseCounts()
    let events = RecentEvents()
    controlPlane?.observeChanges { events.record(kind: "control", $0) }
    let proxy = ProxyServer(
        configuration: settings.proxy,
        router: router,
        logger: logger,
        group: group,
        healthEvents: { [controlPlane] event in
            events.record(event)
            controlPlane?.publishEvent(event.json)
        },
        observers: [closes] + (accessLog.map { [$0] } ?? [])
    )
    let metrics = MetricsExporter(
        sources: .init(
            router: router,
            server: proxy,
            controlPlane: controlPlane?.statistics,
            pluginFaults: pluginFaults,
            closes: closes
        )
    )
    return Application(
        settings: settings,
        logger: logger,
        catalog: catalog,
        policies: policies,
        pluginFaults: pluginFaults,
        router: router,
        controlPlane: controlPlane,
        proxy: proxy,
        accessLog: accessLog,
        metrics: metrics,
        events: events,
        group: group
    )
}

/// l4lb's parts, wired: built by `buildApplication`, started by `start()`, then either run until a
/// shutdown signal (`run()`, the binary) or stopped (`stop()`, the tests).
final class Application: Sendable {
    let settings: RunCommand.Settings
    let logger: Logger
    let catalog: PluginCatalog
    let policies: PolicyRegistry
    /// Plugin picks that answered nonsense (served by round-robin instead).
    let pluginFaults: PluginFaults
    let router: Router
    let controlPlane: ControlPlane?
    let proxy: ProxyServer
    let accessLog: AccessLog?
    let metrics: MetricsExporter
    /// The last health and control-plane events, and five minutes of traffic: the status page's.
    let events: RecentEvents
    let history = TrafficHistory()
    let startedAt = Date()
    private let sampler = NIOLockedValueBox<RepeatedTask?>(nil)
    private let group: MultiThreadedEventLoopGroup
    private let admin = NIOLockedValueBox<AdminServer?>(nil)
    private let stopped = NIOLockedValueBox(false)

    fileprivate init(
        settings: RunCommand.Settings,
        logger: Logger,
        catalog: PluginCatalog,
        policies: PolicyRegistry,
        pluginFaults: PluginFaults,
        router: Router,
        controlPlane: ControlPlane?,
        proxy: ProxyServer,
        accessLog: AccessLog?,
        metrics: MetricsExporter,
        events: RecentEvents,
        group: MultiThreadedEventLoopGroup
    ) {
        self.settings = settings
        self.logger = logger
        self.catalog = catalog
        self.policies = policies
        self.pluginFaults = pluginFaults
        self.router = router
        self.controlPlane = controlPlane
        self.proxy = proxy
        self.accessLog = accessLog
        self.metrics = metrics
        self.events = events
        self.group = group
    }

    /// Reaches Redis first (when it answers, its pool and policy are in force before the first
    /// client), then listens for clients, then opens the admin endpoint. If any step fails, what
    /// had started is stopped again and the one-line reason is thrown.
    func start() async throws(L4LBError) {
        if let controlPlane = self.controlPlane {
            await controlPlane.start()
            controlPlane.reportStatus(instance: self.settings.proxy.instanceID) { [self] in self.statusJSON() }
        }
        do {
            try await self.proxy.start()
            if let address = self.settings.operations.admin {
                let admin = try await AdminServer.start(
                    at: address,
                    group: self.group,
                    endpoints: self.adminEndpoints,
                    logger: self.logger
                )
                self.admin.withLockedValue { $0 = admin }
                // One sample a second for the status page's charts.
                let (history, router) = (self.history, self.router)
                let task = self.group.next().scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in
                    history.sample(router.pool)
                }
                self.sampler.withLockedValue { $0 = task }
            }
        } catch {
            await self.stop()
            throw (error as? L4LBError) ?? L4LBError(.bindFailed, "\(error)")
        }
    }

    /// The admin endpoint's address, once started with `--admin`.
    var adminAddress: SocketAddress? { self.admin.withLockedValue { $0?.localAddress } }

    /// The client listeners' addresses, with the kernel's ports where port 0 was asked for.
    var listenAddresses: [SocketAddress] { self.proxy.localAddresses }

    /// What `/healthz` answers 503 with, or nil while l4lb can serve clients.
    func unhealthyReason() -> String? {
        let pool = self.router.pool
        if pool.isEmpty { return "no backend in the pool" }
        if pool.panic.isOn { return "every backend is retired" }
        return nil
    }

    /// `/ui.json`: the status page's data.
    func statusPageJSON() -> String {
        JSONText.encode(
            StatusPageData(
                status: self.statusDocument(),
                history: self.history.series,
                events: self.events.all
            )
        )
    }

    /// `/status` and the `status:<instance>` key.
    func statusJSON() -> String {
        JSONText.encode(self.statusDocument())
    }

    /// This instance's state: what `/status`, the status key and the status page show.
    private func statusDocument() -> InstanceStatus.Document {
        InstanceStatus.document(
            instance: self.settings.proxy.instanceID,
            startedAt: self.startedAt,
            router: self.router,
            controlPlane: self.controlPlane?.statistics,
            plugins: self.catalog.versions
        )
    }

    var adminEndpoints: AdminServer.Endpoints {
        AdminServer.Endpoints(
            metrics: { [metrics] in metrics.render() },
            status: { [self] in self.statusJSON() },
            unhealthyReason: { [self] in self.unhealthyReason() },
            statusPage: { [self] in self.statusPageJSON() },
            explain: { [router] client in JSONText.encode(ExplainAnswer(router: router, client: client)) }
        )
    }

    /// Runs until a graceful shutdown of the returned group: the proxy drains (within
    /// `--drain-timeout`), then the control plane stops, then the admin endpoint and the access log.
    ///
    /// - Parameters:
    ///   - services: more services to run beside l4lb's (systemd's watchdog), shut down after it.
    ///   - onShutdown: called as the drain begins (systemd's STOPPING=1).
    ///   - attach: handed the service group before it runs, for the signals that shut it down.
    func run(
        services: [any Service] = [],
        onShutdown: @escaping @Sendable () -> Void = {},
        attach: (ServiceGroup) -> Void = { _ in }
    ) async throws {
        var configurations = services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
        if let controlPlane = self.controlPlane {
            configurations.append(.init(service: ControlPlaneService(controlPlane: controlPlane)))
        }
        // Shut down in reverse order: the proxy drains before the control plane stops.
        configurations.append(
            .init(service: ProxyService(server: self.proxy, logger: self.logger, onShutdown: onShutdown))
        )
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: configurations,
                // The binary's ShutdownSignals watches SIGTERM and SIGINT from before l4lb listens.
                gracefulShutdownSignals: [],
                cancellationSignals: [],
                logger: self.logger
            )
        )
        attach(serviceGroup)
        try await serviceGroup.run()
        await self.stop()
    }

    /// Stops everything that runs, at once: listeners and connections, the control plane, the admin
    /// endpoint, the access log and the event loops. Safe to call more than once.
    func stop() async {
        let first = self.stopped.withLockedValue { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        self.sampler.withLockedValue { $0?.cancel() }
        await self.proxy.shutdown()
        await self.controlPlane?.stop()
        let admin = self.admin.withLockedValue { admin in
            defer { admin = nil }
            return admin
        }
        await admin?.stop()
        self.accessLog?.close()
        try? await self.group.shutdownGracefully()
    }
}
