import Atomics
import Foundation
import LBKit
import Logging
import NIOCore

/// The control plane's I/O, confined to the control thread: connect, subscribe, read the keys, hand
/// what arrives to `ControlDecisions` and carry out what it decides; on any connection error drop
/// both connections and reconnect with capped exponential backoff. Logs once per change of
/// connection state, not once per retry.
///
/// It sleeps until something happens: a message on the subscription, a signal on `wakeup` (a stop
/// request, a health event to publish, a new status) or the next status refresh.
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
    private let wakeup: Wakeup
    /// Set by the sentinel watcher when Sentinel announces a new master (nil without Sentinel).
    private let masterSwitched: ManagedAtomic<Bool>?
    /// Told of every change applied and input refused, as the line logged.
    private let changes: @Sendable (String) -> Void
    private var decisions: ControlDecisions
    private var nextStatusReport = NIODeadline.uptimeNanoseconds(0)
    private var names: RedisNames { self.configuration.names }
    private var state = ConnectionState.neverConnected

    init(
        configuration: ControlPlaneConfiguration,
        router: Router,
        policies: PolicyRegistry,
        policy: PolicySpec,
        shadow: PolicySpec? = nil,
        logger: Logger,
        statistics: ControlPlaneStatistics,
        outbox: ControlOutbox,
        wakeup: Wakeup,
        masterSwitched: ManagedAtomic<Bool>? = nil,
        changes: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.changes = changes
        self.configuration = configuration
        self.router = router
        self.policies = policies
        self.decisions = ControlDecisions(
            names: configuration.names,
            policy: policy,
            shadow: shadow,
            instance: configuration.instance
        )
        self.logger = logger
        self.statistics = statistics
        self.outbox = outbox
        self.wakeup = wakeup
        self.masterSwitched = masterSwitched
    }

    /// Runs until `shouldStop` (checked after every wake-up). `firstSyncDone` is called once, right
    /// after the first attempt to reach Redis, whether it read the keys or failed.
    func run(shouldStop: () -> Bool, firstSyncDone: () -> Void) {
        var delay = self.configuration.initialReconnectDelay
        var firstAttempt = true
        repeat {
            let session: (subscriber: RedisConnection, commands: RedisConnection)?
            do {
                session = try self.connect()
                delay = self.configuration.initialReconnectDelay
            } catch {
                self.lost(error)
                session = nil
            }
            if firstAttempt {
                firstAttempt = false
                firstSyncDone()
            }
            if let session {
                do {
                    try self.serve(subscriber: session.subscriber, commands: session.commands, until: shouldStop)
                } catch {
                    self.lost(error)
                }
            }
            guard !shouldStop() else { break }
            // Jittered by up to 20%, so that instances do not reconnect in step. A stop request
            // ends the wait at once; other signals (events queued while Redis is away) do not.
            let jittered = Double(delay.nanoseconds) * Double.random(in: 0.8...1.0)
            let deadline = NIODeadline.now() + .nanoseconds(Int64(jittered))
            while !shouldStop() {
                let left = (deadline - .now()).nanoseconds / 1_000_000
                guard left > 0 else { break }
                if self.wakeup.wait(milliseconds: Int32(clamping: left)) { self.wakeup.reset() }
            }
            delay = min(TimeAmount.nanoseconds(delay.nanoseconds * 2), self.configuration.maximumReconnectDelay)
        } while !shouldStop()
    }

    /// Connects twice (commands, then the subscriber to the same server: with Sentinel, the master
    /// the sentinels name now), subscribes, and reads the keys.
    private func connect() throws -> (subscriber: RedisConnection, commands: RedisConnection) {
        self.masterSwitched?.store(false, ordering: .relaxed)
        let (commands, server) = try RedisConnection.open(
            self.configuration.endpoint,
            timeout: self.configuration.commandTimeout
        )
        let subscriber = try RedisConnection(server, timeout: self.configuration.commandTimeout)
        // The control channels, and the key's own notifications: a SET serverPool written by hand is
        // noticed when the server has notify-keyspace-events on (reloadPool works either way).
        try subscriber.send(
            ["SUBSCRIBE"] + ControlChannel.allCases.map { self.names.channel($0) }
                + [self.names.keyspaceChannel(database: server.database)]
        )
        // Messages published from now on wait in the subscriber's buffer while the keys are read;
        // applying them afterwards is safe because every change is idempotent.
        try self.synchronize(commands)
        // Only now, with commands answered: a server that accepts connections but does not answer
        // (SIGSTOPped) is not "connected".
        var metadata: Logger.Metadata = ["redis": "\(self.configuration.endpoint)"]
        if server != self.configuration.endpoint { metadata["master"] = "\(server)" }
        self.logger.info(
            self.state == .disconnected ? "reconnected to Redis" : "connected to Redis",
            metadata: metadata
        )
        self.state = .connected
        self.statistics.recordConnected()
        self.statistics.recordContact()
        self.nextStatusReport = .uptimeNanoseconds(0)
        return (subscriber, commands)
    }

    /// Applies messages and sends the outbox until `shouldStop` or a connection error.
    private func serve(
        subscriber: RedisConnection,
        commands: RedisConnection,
        until shouldStop: () -> Bool
    ) throws {
        while !shouldStop() {
            if self.masterSwitched?.exchange(false, ordering: .relaxed) == true {
                throw RedisConnection.Failure(description: "Sentinel announced a new master")
            }
            try self.sendOutbox(commands)
            let untilStatus = (self.nextStatusReport - .now()).nanoseconds / 1_000_000
            let timeout = self.outbox.status == nil ? -1 : Int32(clamping: max(0, untilStatus))
            guard let reply = try subscriber.nextReply(waitingUpTo: timeout, orUntilReadable: self.wakeup.fd) else {
                self.wakeup.reset()
                continue
            }
            self.statistics.recordContact()
            // What else arrives within a few milliseconds is applied with it: a burst becomes one
            // pool change, at the cost of at most `batchWindow` of delay.
            var batch = [reply]
            let closes = NIODeadline.now() + Self.batchWindow
            while batch.count < Self.maximumBatch, NIODeadline.now() < closes,
                let more = try subscriber.nextReply(waitingUpTo: 2)
            {
                batch.append(more)
            }
            try self.handle(batch, commands: commands)
        }
    }

    private func lost(_ error: any Error) {
        self.statistics.recordDisconnected()
        guard self.state != .disconnected else { return }
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

    // MARK: Events and status

    /// How long the status key lives without a rewrite: three rewrites, at least a second.
    private var statusTTLMilliseconds: Int64 {
        if let ttl = self.configuration.statusTimeToLive { return max(1, ttl.nanoseconds / 1_000_000) }
        return max(1000, self.configuration.statusInterval.nanoseconds * 3 / 1_000_000)
    }

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
        self.nextStatusReport = .now() + self.configuration.statusInterval
        try commands.command([
            "SET", self.names.statusKey(instance: status.instance), status.make(), "PX",
            "\(self.statusTTLMilliseconds)",
        ])
        self.statistics.recordContact()
    }

    // MARK: Reading the keys

    /// Reads `policy` and `serverPool`, applies them, and seeds whichever is missing.
    private func synchronize(_ commands: RedisConnection) throws {
        switch try commands.command(["GET", self.names.policyKey]) {
        case .string(let text):
            try self.carryOut(self.decisions.policyKey(text, makePolicy: self.policies.makePolicy), commands: commands)
        case .null:
            try commands.command(["SET", self.names.policyKey, self.decisions.policy.description, "NX"])
        case let other:
            self.logger.warning("unexpected reply to GET \(self.names.policyKey)", metadata: ["reply": "\(other)"])
        }
        switch try commands.command(["GET", self.names.shadowPolicyKey]) {
        case .string(let text):
            try self.carryOut(self.decisions.shadowKey(text, makePolicy: self.policies.makePolicy), commands: commands)
        case .null:
            if let shadow = self.decisions.shadow {
                // This instance's --shadow-policy seeds the key, as --policy seeds `policy`.
                try commands.command(["SET", self.names.shadowPolicyKey, shadow.description, "NX"])
            }
        case let other:
            self.logger.warning(
                "unexpected reply to GET \(self.names.shadowPolicyKey)",
                metadata: ["reply": "\(other)"]
            )
        }
        switch try commands.command(["GET", self.names.serverPoolKey]) {
        case .string(let text):
            try self.carryOut(self.decisions.poolKey(text, pool: self.router.pool.specs), commands: commands)
            try self.readPoolVersion(commands)
        case .null:
            let specs = self.router.pool.specs
            if specs.isEmpty {
                self.logger.warning(
                    "no \(self.names.serverPoolKey) key and no --backend: the pool is empty until a backend is added"
                )
            } else {
                // Written only if the key is still missing (the script's fallback): another instance
                // may have seeded it first, and then its pool wins.
                let version = try commands.command([
                    "EVAL", PoolUpdateScript.source, "2", self.names.serverPoolKey, self.names.serverPoolMetaKey,
                    PoolDocument.encode(specs), PoolFingerprint.of(specs),
                ])
                if case .string(let text) = try commands.command(["GET", self.names.serverPoolKey]),
                    (try? PoolDocument.decode(text)) != specs
                {
                    try self.carryOut(self.decisions.poolKey(text, pool: specs), commands: commands)
                } else {
                    self.logger.info(
                        "seeded \(self.names.serverPoolKey) with the pool in use",
                        metadata: ["backends": "\(specs.count)"]
                    )
                }
                if case .integer(let number) = version { self.statistics.recordPoolVersion(number) }
            }
        case let other:
            self.logger.warning("unexpected reply to GET \(self.names.serverPoolKey)", metadata: ["reply": "\(other)"])
        }
    }

    // MARK: Messages

    /// Messages applied together at most; a larger burst is applied in several steps.
    private static let maximumBatch = 4096
    /// How long a burst is gathered after its first message (a pause of 2 ms ends it sooner).
    private static let batchWindow = TimeAmount.milliseconds(50)

    /// Hands a burst to the decisions and carries out what they decide.
    private func handle(_ replies: [RedisReply], commands: RedisConnection) throws {
        var burst: [ControlDecisions.Message] = []
        for reply in replies {
            // Pub/sub pushes arrive as ["message", channel, payload]; subscribe confirmations are ignored.
            guard case .array(let parts) = reply, parts.count == 3, parts[0].text == "message",
                let channelName = parts[1].text, let payload = parts[2].text
            else { continue }
            if channelName == self.keyspaceChannel {
                // A write of serverPool by anyone, l4lb included: read the key again.
                burst.append(.init(channel: .reloadPool, channelName: channelName, payload: payload))
            } else if let channel = self.names.controlChannel(named: channelName) {
                burst.append(.init(channel: channel, channelName: channelName, payload: payload))
            }
        }
        guard !burst.isEmpty else { return }
        let decision = self.decisions.messages(
            burst,
            pool: self.router.pool.specs,
            makePolicy: self.policies.makePolicy,
            codeChanged: self.policies.codeChanged,
            resolve: { address throws(L4LBError) in _ = try BackendResolver.resolve(address) },
            now: Int64(NIODeadline.now().uptimeNanoseconds)
        )
        try self.carryOut(decision, commands: commands)
    }

    private var keyspaceChannel: String {
        self.names.keyspaceChannel(database: self.configuration.endpoint.database)
    }

    /// Reads the version beside `serverPool` into the statistics (0 when nothing has written one).
    private func readPoolVersion(_ commands: RedisConnection) throws {
        let reply = try commands.command(["HGET", self.names.serverPoolMetaKey, "version"])
        self.statistics.recordPoolVersion(reply.text.flatMap { Int($0) } ?? 0)
    }

    /// Installs, logs, counts and sends what `decision` says, in that order.
    private func carryOut(_ decision: ControlDecisions.Decision, commands: RedisConnection) throws {
        var applied = decision.applied
        if let (_, policy) = decision.policy {
            self.router.setPolicy(policy)
        }
        if let shadow = decision.shadow {
            self.router.setShadow(
                shadow.map {
                    ShadowPolicy(
                        spec: $0.spec,
                        policy: $0.policy,
                        samplePercent: self.configuration.shadowSamplePercent,
                        logger: self.logger
                    )
                }
            )
        }
        if let pool = decision.pool {
            do {
                try self.router.setPool(pool)
            } catch {
                applied -= 1
                self.statistics.recordRefused()
                self.logger.warning("refused pool change: \(error.message)", metadata: ["backends": "\(pool.count)"])
            }
        }
        for note in decision.notes {
            switch note {
            case .info(let message, let metadata):
                self.logger.info("\(message)", metadata: metadata.mapValues { "\($0)" })
                self.changes(message)
            case .warning(let message, let metadata):
                self.logger.warning("\(message)", metadata: metadata.mapValues { "\($0)" })
                self.changes(message)
            }
        }
        for _ in 0..<max(0, applied) { self.statistics.recordApplied() }
        for _ in 0..<decision.refused { self.statistics.recordRefused() }
        for command in decision.commands {
            switch try commands.command(command) {
            case .error(let error):
                self.logger.warning(
                    "Redis refused \(command[0]) \(command.count > 3 ? command[3] : command[1])",
                    metadata: ["error": "\(error)"]
                )
            case .integer(let version) where command[0] == "EVAL":
                // PoolUpdateScript answers the version of the pool after it.
                self.statistics.recordPoolVersion(version)
            default:
                break
            }
        }
        for request in decision.explain {
            // Answered after the changes before it in the burst: the explanation is of the state
            // they made.
            let answer = ExplainAnswer(
                router: self.router,
                client: request.client,
                instance: self.configuration.instance
            )
            let key = self.names.explainReplyKey(id: request.id)
            try commands.command(["RPUSH", key, JSONText.encode(answer)])
            try commands.command(["EXPIRE", key, "60"])
        }
        self.statistics.recordContact()
        if decision.reloadPool, case .string(let text) = try commands.command(["GET", self.names.serverPoolKey]) {
            var reloaded = self.decisions.poolKey(text, pool: self.router.pool.specs)
            reloaded.reloadPool = false
            try self.carryOut(reloaded, commands: commands)
            try self.readPoolVersion(commands)
        }
    }
}
