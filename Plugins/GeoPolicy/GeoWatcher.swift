import Foundation
import Synchronization

/// One thread for the whole plugin that checks each geo instance's database file for a new version,
/// each at its own interval. Instances come and go with every `setPolicy`; a thread per instance,
/// asleep for up to an hour before it looked at its stop flag, let a publisher of `setPolicy`
/// messages exhaust the machine's threads. Removing an instance takes effect at once.
final class GeoWatcher: Sendable {
    static let shared = GeoWatcher()

    private struct Watched {
        /// Strong: the instance's deinit removes it, and a check already under way ends harmlessly
        /// on a source nobody else uses.
        var source: GeoDatabaseSource
        var interval: TimeInterval
        var due: Date
    }

    private let state = Mutex<(watched: [ObjectIdentifier: Watched], running: Bool)>(([:], false))
    /// Wakes the thread early: an instance was added (its check may be due sooner than the thread's
    /// sleep) or removed.
    private let wake = NSCondition()

    /// Checks `source`'s file every `interval` seconds until `remove`.
    func add(_ source: GeoDatabaseSource, interval: TimeInterval) {
        let start = self.state.withLock { state -> Bool in
            state.watched[ObjectIdentifier(source)] = Watched(
                source: source,
                interval: interval,
                due: Date().addingTimeInterval(interval)
            )
            defer { state.running = true }
            return !state.running
        }
        if start {
            let thread = Thread { [self] in self.run() }
            thread.name = "l4lb-geo-reload"
            thread.start()
        }
        self.signal()
    }

    func remove(_ source: GeoDatabaseSource) {
        self.state.withLock { _ = $0.watched.removeValue(forKey: ObjectIdentifier(source)) }
        self.signal()
    }

    /// Instances watched now (for tests).
    var count: Int { self.state.withLock { $0.watched.count } }

    private func signal() {
        self.wake.lock()
        self.wake.signal()
        self.wake.unlock()
    }

    private func run() {
        while true {
            let now = Date()
            // The due entries are copied out and checked after the lock is let go: a check opens
            // files, and an instance destroyed meanwhile removes its source under the lock. The copy
            // may then hold a source's last reference; a source's deinit takes no lock of the
            // watcher's (when the watcher held the instances, weakly, dropping the last one ran the
            // instance's deinit here, which took the lock again: a crash under a setPolicy flood).
            let (due, next) = self.state.withLock { state -> ([Watched], Date?) in
                var due: [Watched] = []
                for (key, var entry) in state.watched where entry.due <= now {
                    due.append(entry)
                    entry.due = now.addingTimeInterval(entry.interval)
                    state.watched[key] = entry
                }
                return (due, state.watched.values.map(\.due).min())
            }
            for entry in due { entry.source.reloadIfChanged() }
            self.wake.lock()
            if let next {
                _ = self.wake.wait(until: next)
            } else {
                self.wake.wait()
            }
            self.wake.unlock()
        }
    }
}
