import NIOCore
import ServiceLifecycle

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
