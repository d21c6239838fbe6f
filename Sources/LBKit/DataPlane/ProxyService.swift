import Logging
import NIOCore
import ServiceLifecycle

/// Runs a started `ProxyServer` as a swift-service-lifecycle service: on graceful shutdown (SIGTERM,
/// SIGINT) it stops accepting at once, lets open connections finish for up to the drain timeout,
/// then closes what is left and returns.
public struct ProxyService: Service {
    private let server: ProxyServer
    private let logger: Logger
    private let onShutdown: @Sendable () -> Void

    /// - Parameter onShutdown: called when shutdown begins, before the drain (systemd's STOPPING=1).
    public init(server: ProxyServer, logger: Logger, onShutdown: @escaping @Sendable () -> Void = {}) {
        self.server = server
        self.logger = logger
        self.onShutdown = onShutdown
    }

    public func run() async throws {
        // Returns when graceful shutdown is requested; throws if the task is cancelled instead.
        let cancelled = (try? await gracefulShutdown()) == nil
        self.onShutdown()
        await self.server.stopAccepting()
        if !cancelled {
            let open = self.server.activeConnections
            let timeout = self.server.configuration.drainTimeout
            self.logger.info(
                "stopped accepting; draining open connections",
                metadata: ["open": "\(open)", "drain-timeout": "\(timeout)"]
            )
            let left = await self.server.drain(timeout: timeout)
            if left > 0 {
                self.logger.warning("drain timeout reached; closing connections", metadata: ["open": "\(left)"])
            }
        }
        await self.server.shutdown()
        self.logger.info("stopped")
    }
}
