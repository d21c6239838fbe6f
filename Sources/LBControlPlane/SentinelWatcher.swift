import Atomics
import Foundation
import LBKit
import Logging
import NIOCore

/// Listens to the sentinels' `+switch-master` announcements on a thread of its own and tells the
/// control loop at once, so that it reconnects to the new master without waiting for its own
/// connection to fail (a demoted master may stay reachable, as a replica that refuses writes).
///
/// It is an accelerator: the control loop also asks the sentinels again after any error of its own.
/// One sentinel is subscribed at a time; on an error the watcher moves to the next.
final class SentinelWatcher: Sendable {
    private let endpoint: RedisEndpoint
    private let timeout: TimeAmount
    private let logger: Logger
    /// Set when a switch of our master was announced; the control loop takes it.
    let switched = ManagedAtomic<Bool>(false)
    /// The control loop's wake-up, signalled with every switch.
    private let wakeup: Wakeup
    /// The watcher's own, for stop().
    private let stopWakeup = Wakeup()
    private let stopRequested = ManagedAtomic<Bool>(false)
    private let finished = ManagedAtomic<Bool>(true)
    private let subscribed = ManagedAtomic<Bool>(false)

    /// Whether a sentinel has confirmed the subscription to `+switch-master` (and it is not lost).
    var isSubscribed: Bool { self.subscribed.load(ordering: .relaxed) }

    init(endpoint: RedisEndpoint, timeout: TimeAmount, logger: Logger, wakeup: Wakeup) {
        self.endpoint = endpoint
        self.timeout = timeout
        self.logger = logger
        self.wakeup = wakeup
    }

    func start() {
        guard case .sentinel = self.endpoint.transport else { return }
        self.finished.store(false, ordering: .relaxed)
        let thread = Thread { [self] in
            self.run()
            self.finished.store(true, ordering: .relaxed)
        }
        thread.name = "l4lb-sentinel-watch"
        thread.start()
    }

    /// Asks the thread to stop; it ends within moments (its waits end on the stop signal).
    func stop() {
        self.stopRequested.store(true, ordering: .relaxed)
        self.stopWakeup.signal()
    }

    private func run() {
        guard case .sentinel(let sentinels, let master) = self.endpoint.transport else { return }
        var index = 0
        while !self.stopRequested.load(ordering: .relaxed) {
            let sentinel = sentinels[index % sentinels.count]
            index += 1
            do throws(RedisConnection.Failure) {
                let connection = try SentinelClient.connect(
                    to: sentinel,
                    endpoint: self.endpoint,
                    timeout: self.timeout
                )
                try connection.send(["SUBSCRIBE", "+switch-master"])
                while !self.stopRequested.load(ordering: .relaxed) {
                    guard let reply = try connection.nextReply(waitingUpTo: -1, orUntilReadable: self.stopWakeup.fd)
                    else {
                        continue
                    }
                    // ["subscribe", "+switch-master", 1], then
                    // ["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]
                    guard case .array(let parts) = reply, parts.count == 3 else { continue }
                    if parts[0].text == "subscribe" {
                        self.subscribed.store(true, ordering: .relaxed)
                        continue
                    }
                    guard parts[0].text == "message", let payload = parts[2].text else { continue }
                    let fields = payload.split(separator: " ")
                    guard fields.count == 5, fields[0] == master else { continue }
                    self.logger.warning(
                        "Sentinel switched the Redis master",
                        metadata: [
                            "master": "\(master)", "from": "\(fields[1]):\(fields[2])",
                            "to": "\(fields[3]):\(fields[4])",
                        ]
                    )
                    self.switched.store(true, ordering: .relaxed)
                    self.wakeup.signal()
                }
            } catch {
                self.subscribed.store(false, ordering: .relaxed)
                // Next sentinel, after a pause that a stop request cuts short.
                self.stopWakeup.wait(milliseconds: 500)
            }
        }
    }
}
