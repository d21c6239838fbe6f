import Foundation
import LBKit
import LBOperations
import Logging
import NIOCore
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Runs l4lb as a process: what belongs to the process and not to the application (the logging
/// system, the pid file, the shutdown signals, SIGHUP, systemd), around `buildApplication`.
/// Fatal errors are printed here, once, as one line.
struct Runtime {
    /// The binary as it was started, resolved now: an upgrade starts whatever is at this path then
    /// (where a package upgrade puts the new build), not the running file, which may be gone.
    static let executablePath: String = {
        let started = CommandLine.arguments[0]
        if started.contains("/") {
            // Not resolved: a symbolic link switched to a new build is followed at upgrade time.
            return URL(fileURLWithPath: started).standardizedFileURL.path
        }
        return (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? started
    }()

    let settings: RunCommand.Settings
    /// The settings a reload would put in force now (the configuration file read again).
    let reloadedSettings: @Sendable () throws(L4LBError) -> RunCommand.Settings

    func run() async throws {
        _ = Self.executablePath  // resolved against the working directory l4lb started in
        // SIGHUP and SIGUSR2 end a process by default. Until their handlers are in place (below,
        // before l4lb says it is ready), one sent early is ignored rather than fatal.
        signal(SIGHUP, SIG_IGN)
        signal(SIGUSR2, SIG_IGN)
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
                // An upgrading l4lb hands over its locked descriptor; otherwise the file is taken.
                if let text = ProcessInfo.processInfo.environment[Upgrader.pidFileVariable], let fd = Int32(text) {
                    unsetenv(Upgrader.pidFileVariable)
                    pidFile = try PIDFile(adopting: fd, path: path)
                } else {
                    pidFile = try PIDFile(path: path)
                }
            } catch {
                throw exitWithOperatorError(error.message)
            }
        }
        defer { pidFile?.release() }

        let application: Application
        do {
            application = try buildApplication(settings, logger: logger)
            // Logged once the command line is known to be good, so that a bad flag stays a single line.
            application.catalog.log(to: logger)
            try await application.start()
        } catch {
            throw exitWithOperatorError(error.message)
        }

        // The reload and upgrade handlers go in before l4lb says it is ready: an operator (or systemd's
        // ExecReload) may signal as soon as it is, and the signal must not be lost.
        let reloader = Reloader(
            application: application,
            reloadedSettings: self.reloadedSettings,
            logOutput: logOutput
        )
        let hangup = reloader.installSIGHUP()
        defer { hangup.cancel() }
        let upgrader = Upgrader(
            application: application,
            executable: Self.executablePath,
            arguments: Array(CommandLine.arguments.dropFirst()),
            pidFile: pidFile,
            timeout: settings.upgradeTimeout
        ) { _ in
            // The new process told systemd it is the main one (MAINPID); this one only drains.
            shutdownSignals.requestShutdown()
        }
        let upgrade = upgrader.installSIGUSR2()
        defer { upgrade.cancel() }
        logger.info(
            "l4lb started",
            metadata: [
                "policy": "\(application.router.policy.name)",
                // A count: a pool of thousands listed on one line helps nobody (`l4lb ctl pool` lists it).
                "backends": "\(application.router.pool.count)",
                "pid": "\(getpid())",
            ]
        )
        if application.router.pool.isEmpty {
            logger.warning("the pool is empty: clients are refused until a backend is added")
        }

        let notifier = SystemdNotifier.fromEnvironment()
        // An upgraded process takes the pid file's name now that it serves and takes signals.
        pidFile?.claim()
        notifier?.notify("READY=1\nMAINPID=\(getpid())\nSTATUS=listening")
        Daemon.signalReady()
        Upgrader.signalReady()
        var services: [any Service] = []
        if let notifier, let interval = notifier.watchdogInterval {
            services.append(WatchdogService(notifier: notifier, interval: interval))
        }

        try await application.run(
            services: services,
            onShutdown: {
                if !upgrader.handedOver { notifier?.notify("STOPPING=1\nSTATUS=draining") }
            },
            attach: { shutdownSignals.attach($0) }
        )
        shutdownSignals.cancel()
    }
}
