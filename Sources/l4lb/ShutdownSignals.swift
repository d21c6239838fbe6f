import Dispatch
import NIOConcurrencyHelpers
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM and SIGINT, watched from before l4lb listens: a signal that arrives between the first
/// accepted client (or systemd's READY=1) and the start of the service group is not lost, and does
/// not kill the process with its default action; it starts the graceful shutdown as soon as the
/// group exists.
final class ShutdownSignals: @unchecked Sendable {
    // @unchecked: the sources are set once in init and only cancelled afterwards (DispatchSource is
    // thread-safe, but not marked Sendable).

    private let sources: [any DispatchSourceSignal]
    private let state = NIOLockedValueBox<(requested: Bool, group: ServiceGroup?)>((false, nil))

    init() {
        var sources: [any DispatchSourceSignal] = []
        let queue = DispatchQueue(label: "l4lb-shutdown-signals")
        let state = self.state
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                let group = state.withLockedValue { state -> ServiceGroup? in
                    state.requested = true
                    return state.group
                }
                if let group { Task { await group.triggerGracefulShutdown() } }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// From now on a signal shuts `group` down; one that came earlier does so now.
    func attach(_ group: ServiceGroup) {
        let requested = self.state.withLockedValue { state -> Bool in
            state.group = group
            return state.requested
        }
        if requested { Task { await group.triggerGracefulShutdown() } }
    }

    /// Starts the graceful shutdown as SIGTERM would (after a live upgrade handed over).
    func requestShutdown() {
        let group = self.state.withLockedValue { state -> ServiceGroup? in
            state.requested = true
            return state.group
        }
        if let group { Task { await group.triggerGracefulShutdown() } }
    }

    func cancel() {
        for source in self.sources { source.cancel() }
    }
}
