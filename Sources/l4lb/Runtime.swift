import Dispatch
import Foundation
import LBKit
import Logging
import NIOCore
import NIOPosix
import Policies
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Wires and runs l4lb from checked settings: logging, pid file, policies and plugins, the Redis
/// control plane, the data plane, the admin endpoint, systemd notification, SIGHUP reloads, and the
/// service group that shuts them down in order.
struct Runtime {
    let command: RunCommand
    let settings: RunCommand.Settings
    let configPath: String?

    func run() async throws {
        // The runtime owns the event loops, so that the admin endpoint can outlive the proxy's drain.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, self.settings.proxy.eventLoopThreads))
        do {
            try await self.run(on: group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try? await group.shutdownGracefully()
    }

    private func run(on group: MultiThreadedEventLoopGroup) async throws {
        let settings = self.settings
        let logOutput: LogOutput
        do {
            logOutput = try LogOutput(path: settings.operations.logFile)
        } catch {
            throw exitWithOperatorError(error.message)
        }
        LoggingSystem.bootstrap { label in
            LineLogHandler(
                label: label,
                output: logOutput,
                format: settings.operations.logFormat,
                level: settings.logLevel
            )
        }
        let logger = Logger(label: "l4lb")
        let shutdownSignals = ShutdownSignals()

        var pidFile: PIDFile?
        if let path = settings.operations.pidFile {
            do {
                pidFile = try PIDFile(path: path)
            } catch {
                throw exitWithOperatorError(error.message)
            }
        }
        defer { pidFile?.release() }

        let catalog = self.command.plugins.makeCatalog()
        let (policies, pluginFaults) = self.command.plugins.makeRegistry(catalog: catalog, logger: logger)
        let router: Router
        do {
            router = Router(policy: try policies.makePolicy(settings.policy))
            try router.setPool(settings.proxy.backends)
        } catch {
            throw exitWithOperatorError(error.message)
        }
        // Logged once the command line is known to be good, so that a bad flag stays a single line.
        catalog.log(to: logger)

        // Redis first: when it is reachable, its pool and policy are in force before the first client.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        var controlPlane: ControlPlane?
        if let configuration = settings.controlPlane {
            let started = ControlPlane(
                configuration: configuration,
                router: router,
                policies: policies,
                initialPolicy: settings.policy,
                logger: logger
            )
            await started.start()
            services.append(.init(service: ControlPlaneService(controlPlane: started)))
            controlPlane = started
        }

        let accessLog = settings.operations.accessLog.map {
            AccessLog(path: $0, format: settings.operations.accessLogFormat)
        }
        let publisher = controlPlane
        let server = ProxyServer(
            configuration: settings.proxy,
            router: router,
            logger: logger,
            group: group,
            healthEvents: { event in publisher?.publishEvent(event.json) },
            accessLog: accessLog
        )
        do {
            try await server.start()
        } catch {
            await server.shutdown()
            throw exitWithOperatorError((error as? L4LBError)?.message ?? "\(error)")
        }

        let startedAt = Date()
        let instance = settings.proxy.instanceID
        let status: @Sendable () -> String = { [statistics = controlPlane?.statistics] in
            InstanceStatus.json(
                instance: instance,
                startedAt: startedAt,
                router: router,
                redisConnected: statistics?.isConnected
            )
        }
        controlPlane?.reportStatus(instance: instance, status)

        var admin: AdminServer?
        if let address = settings.operations.admin {
            let exporter = MetricsExporter(
                sources: .init(
                    router: router,
                    server: server,
                    startedAt: startedAt,
                    controlPlane: controlPlane?.statistics,
                    pluginFaults: pluginFaults
                )
            )
            do {
                admin = try await AdminServer.start(
                    at: address,
                    group: group,
                    endpoints: .init(
                        metrics: { exporter.render() },
                        status: status,
                        unhealthyReason: {
                            let pool = router.pool
                            if pool.isEmpty { return "no backend in the pool" }
                            if pool.panic.isOn { return "every backend is retired" }
                            return nil
                        }
                    ),
                    logger: logger
                )
            } catch {
                await server.shutdown()
                throw exitWithOperatorError((error as? L4LBError)?.message ?? "\(error)")
            }
        }

        logger.info(
            "l4lb started",
            metadata: [
                "policy": "\(router.policy.name)",
                // A count: a pool of thousands listed on one line helps nobody (`l4lb ctl pool` lists it).
                "backends": "\(router.pool.count)",
                "pid": "\(getpid())",
            ]
        )
        if router.pool.isEmpty {
            logger.warning("the pool is empty: clients are refused until a backend is added")
        }

        let notifier = SystemdNotifier.fromEnvironment()
        notifier?.notify("READY=1\nMAINPID=\(getpid())\nSTATUS=listening")
        Daemon.signalReady()
        if let notifier, let interval = notifier.watchdogInterval {
            services.append(.init(service: WatchdogService(notifier: notifier, interval: interval)))
        }

        let reloader = Reloader(
            runtime: self,
            router: router,
            policies: policies,
            usesRedis: controlPlane != nil,
            logOutput: logOutput,
            accessLog: accessLog,
            logger: logger
        )
        let hangup = reloader.installSIGHUP()

        let serviceGroup = ServiceGroup(
            configuration: .init(
                // Shut down in reverse order: the proxy drains before the control plane stops.
                services: services + [
                    .init(
                        service: ProxyService(server: server, logger: logger) {
                            notifier?.notify("STOPPING=1\nSTATUS=draining")
                        }
                    )
                ],
                // ShutdownSignals watches SIGTERM and SIGINT from before l4lb listens.
                gracefulShutdownSignals: [],
                cancellationSignals: [],
                logger: logger
            )
        )
        shutdownSignals.attach(serviceGroup)
        try await serviceGroup.run()
        shutdownSignals.cancel()
        hangup.cancel()
        await admin?.stop()
        accessLog?.close()
    }

    /// The settings a reload would put in force, or the reason they are refused.
    func reloadedSettings() throws(L4LBError) -> RunCommand.Settings {
        let command = try RunCommand.resolve(configPath: self.configPath, fallback: self.command)
        return try command.makeAllSettings()
    }
}

/// SIGHUP: reopen log files, read the configuration again and apply what can change while running.
final class Reloader: Sendable {
    private let runtime: Runtime
    private let router: Router
    private let policies: PolicyRegistry
    private let usesRedis: Bool
    private let logOutput: LogOutput
    private let accessLog: AccessLog?
    private let logger: Logger
    private let queue = DispatchQueue(label: "l4lb-reload")

    init(
        runtime: Runtime,
        router: Router,
        policies: PolicyRegistry,
        usesRedis: Bool,
        logOutput: LogOutput,
        accessLog: AccessLog?,
        logger: Logger
    ) {
        self.runtime = runtime
        self.router = router
        self.policies = policies
        self.usesRedis = usesRedis
        self.logOutput = logOutput
        self.accessLog = accessLog
        self.logger = logger
    }

    func installSIGHUP() -> any DispatchSourceSignal {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: self.queue)
        source.setEventHandler { [self] in self.reload() }
        source.resume()
        return source
    }

    func reload() {
        self.logOutput.reopen()
        self.accessLog?.reopen()
        let fresh: RunCommand.Settings
        do {
            fresh = try self.runtime.reloadedSettings()
        } catch {
            self.logger.error("reload refused; nothing changed", metadata: ["reason": "\(error.message)"])
            return
        }
        let current = self.runtime.settings
        var applied: [String] = []
        if self.usesRedis {
            // Redis owns the pool and the policy; the flags only seed it.
        } else {
            if fresh.policy != current.policy || fresh.policy.name != self.router.policy.name {
                do {
                    self.router.setPolicy(try self.policies.makePolicy(fresh.policy))
                    applied.append("policy")
                } catch {
                    self.logger.error(
                        "reload: policy refused; nothing changed",
                        metadata: ["reason": "\(error.message)"]
                    )
                    return
                }
            }
            if fresh.proxy.backends != self.router.pool.specs {
                do {
                    try self.router.setPool(fresh.proxy.backends)
                    applied.append("backends")
                } catch {
                    self.logger.error("reload: backends refused", metadata: ["reason": "\(error.message)"])
                }
            }
        }
        let restartOnly =
            fresh.proxy.listen != current.proxy.listen || fresh.proxy.eventLoopThreads != current.proxy.eventLoopThreads
        if restartOnly {
            self.logger.warning("reload: --listen and --threads take effect at the next start")
        }
        self.logger.info(
            "reloaded; log files reopened",
            metadata: ["applied": "\(applied.isEmpty ? "nothing else" : applied.joined(separator: ", "))"]
        )
    }
}

/// Sends WATCHDOG=1 to systemd at half the unit's WatchdogSec, until shutdown.
struct WatchdogService: Service {
    let notifier: SystemdNotifier
    let interval: TimeAmount

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            self.notifier.notify("WATCHDOG=1")
            try? await Task.sleep(nanoseconds: UInt64(max(self.interval.nanoseconds, 1_000_000)))
        }
    }
}
