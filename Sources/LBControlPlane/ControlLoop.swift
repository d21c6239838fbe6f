import Foundation
import LBKit
import Logging
import NIOCore

/// The control plane's state and loop, confined to the control thread: connect, subscribe, read the
/// keys, apply messages; on any connection error drop both connections and reconnect with capped
/// exponential backoff. Logs once per change of connection state, not once per retry.
final class ControlLoop: @unchecked Sendable {
    // @unchecked: handed to the control thread once at start and used only there afterwards.

    private enum ConnectionState {
        case neverConnected
        case connected
        case disconnected
    }

    private let configuration: ControlPlaneConfiguration
    private let router: Router
    private let policies: PolicyRegistry
    private let logger: Logger
    private let statistics: ControlPlaneStatistics
    private let outbox: ControlOutbox
    private var nextStatusReport = NIODeadline.uptimeNanoseconds(0)
    private var names: RedisNames { self.configuration.names }
    private var policy: PolicySpec
    private var state = ConnectionState.neverConnected
    /// The last refused key values, so a broken key is reported once, not on every reconnect.
    private var refusedPolicyValue: String?
    private var refusedPoolValue: String?

    init(
        configuration: ControlPlaneConfiguration,
        router: Router,
        policies: PolicyRegistry,
        policy: PolicySpec,
        logger: Logger,
        statistics: ControlPlaneStatistics,
        outbox: ControlOutbox
    ) {
        self.configuration = configuration
        self.router = router
        self.policies = policies
        self.policy = policy
        self.logger = logger
        self.statistics = statistics
        self.outbox = outbox
    }

    func run(shouldStop: () -> Bool, firstSyncDone: () -> Void) {
        var delay = self.configuration.initialReconnectDelay
        while !shouldStop() {
            do {
                let subscriber = try RedisConnection(
                    self.configuration.endpoint,
                    timeout: self.configuration.commandTimeout
                )
                let commands = try RedisConnection(
                    self.configuration.endpoint,
                    timeout: self.configuration.commandTimeout
                )
                try subscriber.send(["SUBSCRIBE"] + ControlChannel.allCases.map { self.names.channel($0) })
                // Messages published from now on wait in the subscriber's buffer while the keys are
                // read; applying them afterwards is safe because every change is idempotent.
                try self.synchronize(commands)
                // Only now, with commands answered: a server that accepts connections but does not
                // answer (SIGSTOPped) is not "connected".
                self.logger.info(
                    self.state == .disconnected ? "reconnected to Redis" : "connected to Redis",
                    metadata: ["redis": "\(self.configuration.endpoint)"]
                )
                self.state = .connected
                self.statistics.recordConnected()
                delay = self.configuration.initialReconnectDelay
                firstSyncDone()
                self.nextStatusReport = .uptimeNanoseconds(0)
                while !shouldStop() {
                    if let reply = try subscriber.nextReply(waitingUpTo: 100) {
                        // What else arrives within a few milliseconds is applied with it: a burst
                        // becomes one pool change, at the cost of at most `batchWindow` of delay.
                        var batch = [reply]
                        let closes = NIODeadline.now() + Self.batchWindow
                        while batch.count < Self.maximumBatch, NIODeadline.now() < closes,
                            let more = try subscriber.nextReply(waitingUpTo: 2)
                        {
                            batch.append(more)
                        }
                        try self.handle(batch, commands: commands)
                    }
                    try self.sendOutbox(commands)
                }
            } catch {
                self.statistics.recordDisconnected()
                if self.state != .disconnected {
                    self.logger.warning(
                        self.state == .connected
                            ? "lost Redis; serving with the last known pool"
                            : "cannot reach Redis; serving with the pool from the command line",
                        metadata: [
                            "redis": "\(self.configuration.endpoint)", "error": "\(error)",
                            "backends": "\(self.router.pool.count)",
                        ]
                    )
                    self.state = .disconnected
                }
                firstSyncDone()
                Self.sleep(delay, unless: shouldStop)
                let doubled = TimeAmount.nanoseconds(delay.nanoseconds * 2)
                delay = min(doubled, self.configuration.maximumReconnectDelay)
            }
        }
    }

    /// Sleeps for about `delay` (with up to 20% jitter, so instances do not reconnect in step), in
    /// short slices so that a stop request is seen quickly.
    private static func sleep(_ delay: TimeAmount, unless shouldStop: () -> Bool) {
        let jittered = Double(delay.nanoseconds) * Double.random(in: 0.8...1.0)
        let deadline = Date().addingTimeInterval(jittered / 1e9)
        while Date() < deadline, !shouldStop() {
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    // MARK: Events and status

    /// How often the status key is rewritten, and how long it lives without a rewrite.
    private static let statusInterval = TimeAmount.seconds(5)
    private static let statusTTLSeconds = 15

    private func sendOutbox(_ commands: RedisConnection) throws {
        let (events, dropped) = self.outbox.drain()
        if dropped > 0 {
            self.logger.warning(
                "dropped health events while Redis was unreachable",
                metadata: ["dropped": "\(dropped)"]
            )
        }
        for event in events {
            try commands.command(["PUBLISH", self.names.eventsChannel, event])
        }
        guard let status = self.outbox.status, NIODeadline.now() >= self.nextStatusReport else { return }
        self.nextStatusReport = .now() + Self.statusInterval
        try commands.command([
            "SET", self.names.statusKey(instance: status.instance), status.make(), "EX", "\(Self.statusTTLSeconds)",
        ])
    }

    // MARK: Reading the keys

    /// Reads `policy` and `serverPool`, applies them, and seeds whichever is missing.
    private func synchronize(_ commands: RedisConnection) throws {
        switch try commands.command(["GET", self.names.policyKey]) {
        case .string(let text):
            self.adoptPolicy(fromKey: text)
        case .null:
            try commands.command(["SET", self.names.policyKey, self.policy.description, "NX"])
        case let other:
            self.logger.warning("unexpected reply to GET \(self.names.policyKey)", metadata: ["reply": "\(other)"])
        }
        switch try commands.command(["GET", self.names.serverPoolKey]) {
        case .string(let text):
            self.adoptPool(fromKey: text)
        case .null:
            let specs = self.router.pool.specs
            if specs.isEmpty {
                self.logger.warning(
                    "no \(self.names.serverPoolKey) key and no --backend: the pool is empty until a backend is added"
                )
            } else if try commands.command(["SET", self.names.serverPoolKey, PoolDocument.encode(specs), "NX"])
                == .null,
                case .string(let text) = try commands.command(["GET", self.names.serverPoolKey])
            {
                // Another instance seeded the key first: its pool wins.
                self.adoptPool(fromKey: text)
            } else {
                self.logger.info(
                    "seeded \(self.names.serverPoolKey) with the pool in use",
                    metadata: ["backends": "\(specs.count)"]
                )
            }
        case let other:
            self.logger.warning("unexpected reply to GET \(self.names.serverPoolKey)", metadata: ["reply": "\(other)"])
        }
    }

    private func adoptPolicy(fromKey text: String) {
        do {
            let spec = try PolicySpec(parsing: text)
            guard spec != self.policy else { return }
            self.router.setPolicy(try self.policies.makePolicy(spec))
            self.policy = spec
            self.refusedPolicyValue = nil
            self.statistics.recordApplied()
            self.logger.info("policy from Redis", metadata: ["policy": "\(spec)"])
        } catch {
            guard text != self.refusedPolicyValue else { return }
            self.refusedPolicyValue = text
            self.refuse(what: "key \(self.names.policyKey)", payload: text, reason: error.message)
        }
    }

    private func adoptPool(fromKey text: String) {
        do {
            let specs = try PoolDocument.decode(text)
            self.refusedPoolValue = nil
            guard specs != self.router.pool.specs else { return }
            try self.router.setPool(specs)
            self.statistics.recordApplied()
            self.logger.info("pool from Redis", metadata: ["backends": "\(specs.count)"])
        } catch {
            guard text != self.refusedPoolValue else { return }
            self.refusedPoolValue = text
            self.refuse(what: "key \(self.names.serverPoolKey)", payload: text, reason: error.message)
        }
    }

    // MARK: Messages

    /// Messages applied together at most; a larger burst is applied in several steps.
    private static let maximumBatch = 4096
    /// How long a burst is gathered after its first message (a pause of 2 ms ends it sooner).
    private static let batchWindow = TimeAmount.milliseconds(50)

    /// Applies a burst of messages in order: policy messages one by one, pool messages as one pool
    /// change and one update of the key.
    private func handle(_ replies: [RedisReply], commands: RedisConnection) throws {
        var editor = PoolEditor(self.router.pool.specs)
        var keyUpdates: [String] = []
        var changed = false
        for reply in replies {
            // Pub/sub pushes arrive as ["message", channel, payload]; subscribe confirmations are ignored.
            guard case .array(let parts) = reply, parts.count == 3, parts[0].text == "message",
                let channelName = parts[1].text, let payload = parts[2].text,
                let channel = self.names.controlChannel(named: channelName)
            else { continue }
            let message: ControlMessage
            do {
                message = try ControlMessage(channel: channel, payload: payload)
                if case .addServer(let spec) = message {
                    // Resolved now, so that a name that does not resolve refuses this message alone.
                    _ = try BackendResolver.resolve(spec.address)
                }
            } catch {
                self.refuse(what: "message on \(channelName)", payload: payload, reason: error.message)
                continue
            }
            switch message {
            case .setPolicy(let spec):
                try self.apply(policy: spec, channel: channelName, commands: commands)
            case .addServer(let spec):
                keyUpdates += ["add", spec.address.description, PoolDocument.encodeEntry(spec)]
                let change = editor.apply(message)
                changed = self.log(change, backends: editor.count) || changed
            case .removeServer(let address):
                keyUpdates += ["remove", address.description, ""]
                let change = editor.apply(message)
                changed = self.log(change, backends: editor.count) || changed
            }
        }
        if changed {
            do {
                try self.router.setPool(editor.specs)
                self.statistics.recordApplied()
            } catch {
                self.refuse(what: "pool change", payload: "\(keyUpdates.count / 3) messages", reason: error.message)
            }
        }
        guard !keyUpdates.isEmpty else { return }
        // Written even when nothing changed here: the key may not have caught up yet.
        let reply = try commands.command(
            [
                "EVAL", PoolUpdateScript.source, "1", self.names.serverPoolKey,
                PoolDocument.encode(self.router.pool.specs),
            ]
                + keyUpdates
        )
        if case .error(let error) = reply {
            self.logger.warning("could not update \(self.names.serverPoolKey)", metadata: ["error": "\(error)"])
        }
    }

    /// Logs one change as the change, with the pool's size after it; true if there was one.
    private func log(_ change: PoolEditor.Change?, backends: Int) -> Bool {
        guard let change else { return false }
        let what: String
        switch change {
        case .added(let spec): what = "added \(spec)"
        case .updated(let spec): what = "updated \(spec)"
        case .removed(let address): what = "removed \(address)"
        }
        self.logger.info("pool change: \(what)", metadata: ["backends": "\(backends)"])
        return true
    }

    private func apply(policy spec: PolicySpec, channel: String, commands: RedisConnection) throws {
        // Compared before anything is built: the spec in force again must cost nothing (building a
        // plugin instance opens files and may start work; a flood of repeats must not).
        if spec != self.policy {
            let policy: any LoadBalancingPolicy
            do {
                policy = try self.policies.makePolicy(spec)
            } catch {
                self.refuse(what: "message on \(channel)", payload: spec.description, reason: error.message)
                return
            }
            self.router.setPolicy(policy)
            self.policy = spec
            self.statistics.recordApplied()
            self.logger.info("policy set", metadata: ["policy": "\(spec)"])
        }
        try commands.command(["SET", self.names.policyKey, spec.description])
    }

    private func refuse(what: String, payload: String, reason: String) {
        self.statistics.recordRefused()
        let shown = payload.count > 200 ? String(payload.prefix(200)) + "..." : payload
        self.logger.warning(
            "refused \(what): \(reason)",
            metadata: ["payload": "\(shown)"]
        )
    }
}
