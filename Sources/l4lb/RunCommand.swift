import ArgumentParser
import Foundation
import LBControlPlane
import LBKit
import LBOperations
import Logging
import NIOCore
import Policies
import ServiceLifecycle

/// `l4lb run` (the default): parse flags into a `ProxyConfiguration`, wire the data plane and run it
/// until SIGTERM or SIGINT. Only parsing and wiring live here.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the load balancer (the default subcommand)."
    )

    @Option(
        name: .customLong("listen"),
        help: ArgumentHelp(
            "Address to accept clients on, host:port or [ipv6]:port; repeatable. Default 127.0.0.1:8080, unless systemd hands l4lb its sockets.",
            valueName: "address"
        )
    )
    var listen: [String] = []

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "On SIGUSR2, how long the new binary may take to be ready before the upgrade is called off.",
            valueName: "duration"
        )
    )
    var upgradeTimeout = DurationFlag("30s")

    @Option(
        name: .customLong("backend"),
        help: "Backend host:port[,weight=N][,region=NAME]; repeatable."
    )
    var backends: [String] = []

    @Option(help: "Balancing policy: round-robin, least-connections, maglev, or a plugin's (see `l4lb policies`).")
    var policy: String = "round-robin"

    @Option(
        help: ArgumentHelp(
            "A shadow policy beside the active one: asked for each client, never obeyed; its counts show what a switch would do.",
            discussion: "Redis's setShadowPolicy and clearShadowPolicy replace it live."
        )
    )
    var shadowPolicy: String?

    @Option(help: "Percent of new clients the shadow policy is asked about (1-100).")
    var shadowSample: String = "100%"

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp("Longest wait for a backend's TCP handshake (e.g. 500ms, 3s).", valueName: "duration")
    )
    var connectTimeout = DurationFlag("3s")

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "Close a connection after this long with no traffic either way (as nginx's proxy_timeout); 0 = never.",
            valueName: "duration"
        )
    )
    var idleTimeout = DurationFlag("10m")

    @Option(
        parsing: .unconditional,
        help: "Most client connections open at once; further clients wait in the listen queue. 0 = no limit."
    )
    var maxConnections: Int = 0

    @Option(parsing: .unconditional, help: "Backends to try for one client before closing it.")
    var connectAttempts: Int = 3

    @Flag(
        inversion: .prefixedNo,
        help: "Move a client whose backend resets before answering to another backend, replaying its bytes."
    )
    var retryOnReset = true

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "On SIGTERM/SIGINT, how long open connections may finish before they are closed.",
            valueName: "duration"
        )
    )
    var drainTimeout = DurationFlag("10s")

    @Option(parsing: .unconditional, help: "Event-loop threads; 0 = one per core (or per CPU of --relay-cpus).")
    var threads: Int = 0

    @Option(
        name: .customLong("relay-cpus"),
        help: ArgumentHelp(
            "Pin relay thread N to the Nth CPU of this list, e.g. 0-3 or 2,3 (as HAProxy's cpu-map), or 'auto' for every CPU l4lb may use; default: unpinned.",
            valueName: "cpus"
        )
    )
    var relayCPUs: String?

    @Option(
        name: .customLong("relay-slice"),
        help: ArgumentHelp(
            "The scheduler time slice each relay thread asks for (Linux 6.12+ EEVDF), 100us-100ms; 0 keeps the kernel's.",
            valueName: "duration"
        )
    )
    var relaySlice = SchedulerSlice.standard.description

    @Flag(help: "Expect a PROXY protocol v1 or v2 header on every client connection and use its client address.")
    var acceptProxyProtocol = false

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "With --accept-proxy-protocol: close a client that sends no valid header this fast.",
            valueName: "duration"
        )
    )
    var proxyProtocolTimeout = DurationFlag("3s")

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(help: "This instance's name in health events and its Redis status key (default: host name and pid).")
    var instanceID: String?

    @OptionGroup var redis: RedisOptions

    @OptionGroup var health: HealthOptions

    @OptionGroup var plugins: PluginOptions

    @Option(help: "Read flags from this file, one per line ('listen 0.0.0.0:80'); command-line flags override it.")
    var config: String?

    @OptionGroup var operations: OperationsOptions

    func run() async throws {
        // Sockets handed over (systemd, an upgrading l4lb) are claimed first, once.
        let inherited: [InheritedListener]
        do {
            inherited = try InheritedListeners.fromEnvironment()
        } catch {
            throw exitWithOperatorError(error.message)
        }
        // With --config, the file's lines become flags and everything is parsed again, so that one
        // parser checks both; SIGHUP repeats this to reload.
        let checked = Self.check(configPath: self.config, command: self, inherited: inherited)
        guard case .success(let (resolved, settings)) = checked else {
            if case .failure(let error) = checked { throw exitWithOperatorError(error.message) }
            return
        }
        if settings.operations.daemon && !Daemon.isChild {
            throw ExitCode(Daemon.detach())
        }
        let configPath = self.config
        let fallback = resolved
        try await Runtime(settings: settings) { () throws(L4LBError) in
            try Self.resolve(configPath: configPath, fallback: fallback).makeAllSettings(inherited: inherited)
        }.run()
    }

    /// The flags in force and their checked settings, or the one-line reason they are refused.
    static func check(
        configPath: String?,
        command: RunCommand,
        inherited: [InheritedListener] = []
    ) -> Result<(RunCommand, Settings), L4LBError> {
        do throws(L4LBError) {
            let resolved = try Self.resolve(configPath: configPath, fallback: command)
            return .success((resolved, try resolved.makeAllSettings(inherited: inherited)))
        } catch {
            return .failure(error)
        }
    }

    /// The flags in force: this command's, or with `configPath` the file's merged under the
    /// command line's.
    static func resolve(configPath: String?, fallback: RunCommand) throws(L4LBError) -> RunCommand {
        guard let configPath else { return fallback }
        let lines = try ConfigurationFile.read(configPath)
        var commandLine = Array(CommandLine.arguments.dropFirst())
        if commandLine.first == "run" { commandLine.removeFirst() }
        let arguments = ConfigurationFile.merge(lines, commandLine: commandLine)
        do {
            return try RunCommand.parse(arguments)
        } catch {
            let message = RunCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid"
            throw L4LBError(.invalidValue, "--config \(configPath): \(message)")
        }
    }

    /// Everything `run` needs, checked: the data plane's configuration, the policy, the log level,
    /// the control plane's configuration and the operational settings.
    struct Settings {
        var proxy: ProxyConfiguration
        var policy: PolicySpec
        var logLevel: Logger.Level
        var upgradeTimeout: Duration
        var controlPlane: ControlPlaneConfiguration?
        var operations: OperationsOptions.Settings
        var pluginDirectories: [String]
        /// `--shadow-policy`, and the percent of clients it is asked about.
        var shadowPolicy: PolicySpec? = nil
        var shadowSamplePercent = 100
    }

    /// - Parameter inherited: listening sockets handed over at start (systemd, an upgrade).
    func makeAllSettings(inherited: [InheritedListener] = []) throws(L4LBError) -> Settings {
        var (proxy, policy, level) = try self.makeSettings(inherited: inherited)
        proxy.inheritedListeners = inherited
        let operations = try self.operations.makeSettings()
        proxy.sendProxyProtocol = operations.sendProxyProtocol
        var controlPlane = try self.redis.makeConfiguration()
        let samplePercent = try Self.percent(self.shadowSample, flag: "--shadow-sample")
        controlPlane?.instance = proxy.instanceID
        controlPlane?.shadowSamplePercent = samplePercent
        return Settings(
            proxy: proxy,
            policy: policy,
            logLevel: level,
            upgradeTimeout: .nanoseconds(self.upgradeTimeout.amount.nanoseconds),
            controlPlane: controlPlane,
            operations: operations,
            pluginDirectories: self.plugins.directories,
            shadowPolicy: try self.shadowPolicy.map { text throws(L4LBError) in
                do throws(L4LBError) { return try PolicySpec(parsing: text) } catch {
                    throw L4LBError(error.code, "--shadow-policy: \(error.message)")
                }
            },
            shadowSamplePercent: samplePercent
        )
    }

    /// `N%` or `N`, N in 1-100.
    static func percent(_ text: String, flag: String) throws(L4LBError) -> Int {
        let digits = text.hasSuffix("%") ? String(text.dropLast()) : text
        guard let value = Int(digits), (1...100).contains(value) else {
            throw L4LBError(.invalidValue, "\(flag): '\(text.prefix(32))' is not a percent in 1-100 (e.g. 10%)")
        }
        return value
    }

    /// Every flag checked and converted here, so a bad value is one clear line before anything listens.
    private func makeSettings(
        inherited: [InheritedListener]
    ) throws(L4LBError) -> (ProxyConfiguration, PolicySpec, Logger.Level) {
        // Without --listen: the sockets systemd (or an upgrading l4lb) handed over, or the default.
        let texts = self.listen.isEmpty && inherited.isEmpty ? ["127.0.0.1:8080"] : self.listen
        var listen: [HostAndPort] = []
        for text in texts {
            listen.append(try HostAndPort(parsing: text, allowPortZero: true))
        }
        var backends: [BackendSpec] = []
        for text in self.backends {
            let spec = try BackendSpec(parsing: text)
            guard !backends.contains(where: { $0.address == spec.address }) else {
                throw L4LBError(.invalidBackend, "--backend: \(spec.address) is listed twice")
            }
            backends.append(spec)
        }
        let policy = try PolicySpec(parsing: self.policy)
        let connectTimeout = self.connectTimeout.amount
        guard connectTimeout > .zero else {
            throw L4LBError(.invalidDuration, "--connect-timeout must be more than 0")
        }
        let idleTimeout = self.idleTimeout.amount
        let drainTimeout = self.drainTimeout.amount
        guard self.maxConnections >= 0 else {
            throw L4LBError(.invalidValue, "--max-connections must be 0 (no limit) or more")
        }
        guard (1...100).contains(self.connectAttempts) else {
            throw L4LBError(.invalidValue, "--connect-attempts must be in 1-100")
        }
        guard (0...1024).contains(self.threads) else {
            throw L4LBError(.invalidValue, "--threads must be in 0-1024 (0 = one per core)")
        }
        let relayCPUs = try self.relayCPUs.map { text throws(L4LBError) in try Self.checkedCPUs(text) }
        let relaySlice = try SchedulerSlice.parse(self.relaySlice)
        guard let level = Logger.Level(rawValue: self.logLevel.lowercased()) else {
            throw L4LBError(
                .invalidValue,
                "--log-level: '\(self.logLevel)' is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        let health = try self.health.makeSettings(probeTimeout: connectTimeout)
        let proxyProtocolTimeout = self.proxyProtocolTimeout.amount
        guard proxyProtocolTimeout > .zero else {
            throw L4LBError(.invalidDuration, "--proxy-protocol-timeout must be more than 0")
        }
        if let instanceID = self.instanceID, instanceID.isEmpty || instanceID.contains(" ") {
            throw L4LBError(.invalidValue, "--instance-id must be a non-empty word without spaces")
        }
        let configuration = ProxyConfiguration(
            listen: listen,
            backends: backends,
            connectTimeout: connectTimeout,
            idleTimeout: idleTimeout == .zero ? nil : idleTimeout,
            maxConnections: self.maxConnections == 0 ? nil : self.maxConnections,
            connectAttempts: self.connectAttempts,
            retryOnReset: self.retryOnReset,
            drainTimeout: drainTimeout,
            relayThreads: self.threads != 0 ? self.threads : relayCPUs?.cpus.count ?? System.coreCount,
            relayCPUs: relayCPUs,
            relaySlice: relaySlice,
            acceptProxyProtocol: self.acceptProxyProtocol ? proxyProtocolTimeout : nil,
            health: health,
            instanceID: self.instanceID ?? ProxyConfiguration.defaultInstanceID
        )
        return (configuration, policy, level)
    }

    /// `--relay-cpus`, parsed and held against the CPUs this process may use: a CPU it may not use
    /// would leave its thread unpinned, so it is refused at start.
    private static func checkedCPUs(_ text: String) throws(L4LBError) -> CPUList {
        if text == "auto" {
            // As nginx's `worker_cpu_affinity auto`: each allowed CPU in turn.
            guard let allowed = ThreadScheduling.allowed() else {
                throw L4LBError(.invalidValue, "--relay-cpus: auto: the kernel would not say which CPUs l4lb may use")
            }
            return allowed
        }
        let list = try CPUList(parsing: text)
        if let allowed = ThreadScheduling.allowed() {
            let missing = list.missing(from: allowed)
            if !missing.isEmpty {
                throw L4LBError(
                    .invalidValue,
                    "--relay-cpus: \(missing.count == 1 ? "CPU" : "CPUs") \(CPUList(cpus: missing)) not available to l4lb (allowed: \(allowed))"
                )
            }
        }
        return list
    }
}
