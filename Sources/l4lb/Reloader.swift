import Dispatch
import LBControlPlane
import LBKit
import LBOperations
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// SIGHUP: reopen log files, read the configuration again and apply what can change while running.
///
/// A change is judged against the settings in force, which the last reload set, not against those
/// l4lb started with: otherwise, once one reload had changed the policy, every later SIGHUP would
/// rebuild it (restarting round-robin's rotation, reopening geo's database) and log it as applied.
final class Reloader: Sendable {
    private let application: Application
    private let reloadedSettings: @Sendable () throws(L4LBError) -> RunCommand.Settings
    private let logOutput: LogOutput?
    private let inForce: NIOLockedValueBox<RunCommand.Settings>
    private let queue = DispatchQueue(label: "l4lb-reload")

    init(
        application: Application,
        reloadedSettings: @escaping @Sendable () throws(L4LBError) -> RunCommand.Settings,
        logOutput: LogOutput?
    ) {
        self.application = application
        self.reloadedSettings = reloadedSettings
        self.logOutput = logOutput
        self.inForce = NIOLockedValueBox(application.settings)
    }

    func installSIGHUP() -> any DispatchSourceSignal {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: self.queue)
        source.setEventHandler { [self] in
            Task { await self.reload() }
        }
        source.resume()
        return source
    }

    /// Reloads once; returns what was applied ("policy", "backends", "listen"), empty when nothing
    /// changed or the new settings were refused.
    @discardableResult
    func reload() async -> [String] {
        let logger = self.application.logger
        self.logOutput?.reopen()
        self.application.accessLog?.reopen()
        let fresh: RunCommand.Settings
        do {
            fresh = try self.reloadedSettings()
        } catch {
            logger.error("reload refused; nothing changed", metadata: ["reason": "\(error.message)"])
            return []
        }
        let router = self.application.router
        var applied: [String] = []
        // With Redis, Redis owns the pool and the policy; the flags only seed it.
        if self.application.controlPlane == nil {
            let current = self.inForce.withLockedValue { $0 }
            if fresh.policy != current.policy {
                do {
                    router.setPolicy(try self.application.policies.makePolicy(fresh.policy))
                    self.inForce.withLockedValue { $0.policy = fresh.policy }
                    applied.append("policy")
                } catch {
                    logger.error("reload: policy refused; nothing changed", metadata: ["reason": "\(error.message)"])
                    return []
                }
            }
            if fresh.proxy.backends != router.pool.specs {
                do {
                    try router.setPool(fresh.proxy.backends)
                    applied.append("backends")
                } catch {
                    logger.error("reload: backends refused", metadata: ["reason": "\(error.message)"])
                }
            }
        }
        // Listeners open and close without a restart; the thread count needs one.
        let listenInForce = self.inForce.withLockedValue { $0.proxy.listen }
        if fresh.proxy.listen != listenInForce {
            do {
                let (added, removed) = try await self.application.proxy.updateListeners(fresh.proxy.listen)
                self.inForce.withLockedValue { $0.proxy.listen = fresh.proxy.listen }
                if !added.isEmpty || !removed.isEmpty { applied.append("listen") }
            } catch {
                logger.error("reload: --listen refused; listeners unchanged", metadata: ["reason": "\(error.message)"])
            }
        }
        if fresh.proxy.relayThreads != self.application.settings.proxy.relayThreads {
            logger.warning("reload: --threads takes effect at the next start (or live upgrade, SIGUSR2)")
        }
        if fresh.proxy.relayCPUs != self.application.settings.proxy.relayCPUs {
            logger.warning("reload: --relay-cpus takes effect at the next start (or live upgrade, SIGUSR2)")
        }
        if fresh.proxy.relaySlice != self.application.settings.proxy.relaySlice {
            logger.warning("reload: --relay-slice takes effect at the next start (or live upgrade, SIGUSR2)")
        }
        logger.info(
            "reloaded; log files reopened",
            metadata: ["applied": "\(applied.isEmpty ? "nothing else" : applied.joined(separator: ", "))"]
        )
        return applied
    }
}
