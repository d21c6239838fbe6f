import LBKit

/// What the control plane does with what Redis sends, decided without Redis: a value that holds the
/// policy in force and the key values it last refused, fed a burst of messages or a key's value, and
/// answering with a `Decision` for the control loop to carry out (install, write to Redis, log,
/// count).
///
/// Building a policy is the one step it takes outside itself (`makePolicy`), because whether a
/// policy can be built (a geo database that opens) is part of whether a message is refused.
/// Resolving an added backend's name is the other (`resolve`), for the same reason.
struct ControlDecisions {
    /// A log line the loop writes.
    enum Note: Equatable, Sendable {
        case info(String, metadata: [String: String])
        case warning(String, metadata: [String: String])
    }

    /// A message as it came off a channel.
    struct Message: Equatable, Sendable {
        var channel: ControlChannel
        /// The channel's name in Redis (with the prefix), for the log.
        var channelName: String
        var payload: String
    }

    struct Decision {
        /// The policy to install, with its spec, when one was built.
        var policy: (spec: PolicySpec, policy: any LoadBalancingPolicy)?
        /// The pool to install, when it changed.
        var pool: [BackendSpec]?
        /// Redis commands to send, in order.
        var commands: [[String]] = []
        var notes: [Note] = []
        /// Changes of the pool or the policy (one per pool installed, one per policy built).
        var applied = 0
        /// Messages and key values refused as bad input.
        var refused = 0
        /// Read `serverPool` again once the rest is carried out (a reloadPool message, or a
        /// keyspace notification of a write to the key).
        var reloadPool = false
        /// The shadow policy to install (with its spec), or nil inside to remove it.
        var shadow: (spec: PolicySpec, policy: any LoadBalancingPolicy)??
        /// `l4lb ctl explain` requests this instance answers, in order.
        var explain: [ExplainRequest] = []
    }

    typealias MakePolicy = (PolicySpec) throws(L4LBError) -> any LoadBalancingPolicy
    /// Whether the code behind a spec changed since it was last built (a new plugin build).
    typealias CodeChanged = (PolicySpec) -> Bool
    typealias Resolve = (HostAndPort) throws(L4LBError) -> Void

    let names: RedisNames
    /// The spec of the policy in force.
    private(set) var policy: PolicySpec
    /// The spec of the shadow policy in force, if any.
    private(set) var shadow: PolicySpec?
    /// The last refused key values, so that a broken key is reported once, not on every reconnect.
    private var refusedPolicyValue: String?
    private var refusedPoolValue: String?
    private var refusedShadowValue: String?

    /// This instance's name: an explain request that names another instance is not ours.
    let instance: String?
    /// Explain requests answered per second at most: each costs the control thread an explanation
    /// and Redis a list, and a flood of them must not hold up pool changes.
    static let explainRequestsPerSecond = 50
    private var explainLimit = RateLimiter(limit: ControlDecisions.explainRequestsPerSecond, window: .seconds(1))

    init(names: RedisNames, policy: PolicySpec, shadow: PolicySpec? = nil, instance: String? = nil) {
        self.names = names
        self.policy = policy
        self.shadow = shadow
        self.instance = instance
    }

    // MARK: Messages

    /// A burst of messages, applied in order: each policy message on its own (and written to the
    /// `policy` key), the pool messages as one pool change and one update of `serverPool` (the
    /// PoolUpdateScript, which falls back to the resulting pool when the key is missing or broken).
    mutating func messages(
        _ burst: [Message],
        pool current: [BackendSpec],
        makePolicy: MakePolicy,
        codeChanged: CodeChanged = { _ in false },
        resolve: Resolve,
        now: Int64 = 0
    ) -> Decision {
        var decision = Decision()
        var editor = PoolEditor(current)
        var keyUpdates: [String] = []
        var poolChanged = false
        for received in burst {
            let message: ControlMessage
            do throws(L4LBError) {
                message = try ControlMessage(channel: received.channel, payload: received.payload)
                if case .addServer(let spec) = message {
                    // Resolved now, so that a name that does not resolve refuses this message alone.
                    try resolve(spec.address)
                }
            } catch {
                Self.refuse("message on \(received.channelName)", received.payload, error.message, &decision)
                continue
            }
            switch message {
            case .reloadPool:
                decision.reloadPool = true
            case .setPolicy(let spec):
                self.setPolicy(
                    spec,
                    channelName: received.channelName,
                    rebuild: codeChanged(spec),
                    makePolicy: makePolicy,
                    &decision
                )
            case .setShadowPolicy(let spec):
                self.setShadow(
                    spec,
                    channelName: received.channelName,
                    rebuild: codeChanged(spec),
                    makePolicy: makePolicy,
                    &decision
                )
            case .clearShadowPolicy:
                if self.shadow != nil {
                    self.shadow = nil
                    decision.shadow = .some(nil)
                    decision.applied += 1
                    decision.notes.append(.info("shadow policy cleared", metadata: [:]))
                }
                decision.commands.append(["DEL", self.names.shadowPolicyKey])
            case .explain(let request):
                guard request.instance == nil || request.instance == self.instance else { break }
                guard let heldBack = self.explainLimit.admit(now: now) else {
                    decision.refused += 1
                    break
                }
                if heldBack > 0 {
                    decision.notes.append(
                        .warning(
                            "dropped \(heldBack) explain requests: at most \(Self.explainRequestsPerSecond) a second are answered",
                            metadata: [:]
                        )
                    )
                }
                decision.explain.append(request)
            case .addServer(let spec):
                keyUpdates += ["add", spec.address.description, PoolDocument.encodeEntry(spec)]
                poolChanged = Self.note(editor.apply(message), backends: editor.count, &decision) || poolChanged
            case .removeServer(let address):
                keyUpdates += ["remove", address.description, ""]
                poolChanged = Self.note(editor.apply(message), backends: editor.count, &decision) || poolChanged
            }
        }
        let pool = editor.specs
        if poolChanged {
            decision.pool = pool
            decision.applied += 1
        }
        if !keyUpdates.isEmpty {
            // Written even when nothing changed here: the key may not have caught up yet.
            decision.commands.append(
                [
                    "EVAL", PoolUpdateScript.source, "2", self.names.serverPoolKey, self.names.serverPoolMetaKey,
                    PoolDocument.encode(pool), PoolFingerprint.of(pool),
                ] + keyUpdates
            )
        }
        return decision
    }

    /// A `setPolicy` message: the policy to install, and the `policy` key written.
    private mutating func setPolicy(
        _ spec: PolicySpec,
        channelName: String,
        rebuild: Bool,
        makePolicy: MakePolicy,
        _ decision: inout Decision
    ) {
        let outcome = Self.build(spec, current: self.policy, rebuild: rebuild, channelName, makePolicy, &decision)
        guard let outcome else { return }  // refused: nothing installed, the key left as it is
        if let built = outcome {
            decision.policy = built
            self.policy = spec
            decision.notes.append(.info("policy set", metadata: ["policy": "\(spec)"]))
        }
        decision.commands.append(["SET", self.names.policyKey, spec.description])
    }

    /// A `setShadowPolicy` message: the same rule, and its own key.
    private mutating func setShadow(
        _ spec: PolicySpec,
        channelName: String,
        rebuild: Bool,
        makePolicy: MakePolicy,
        _ decision: inout Decision
    ) {
        let outcome = Self.build(spec, current: self.shadow, rebuild: rebuild, channelName, makePolicy, &decision)
        guard let outcome else { return }  // refused: nothing installed, the key left as it is
        if let built = outcome {
            decision.shadow = .some(built)
            self.shadow = spec
            decision.notes.append(.info("shadow policy set", metadata: ["policy": "\(spec)"]))
        }
        decision.commands.append(["SET", self.names.shadowPolicyKey, spec.description])
    }

    /// The policy a message names, built only when its spec differs from `current` or `rebuild`
    /// (its plugin's file holds a new build): the spec in force again must cost nothing (building a
    /// plugin instance opens files and may start work; a flood of repeats must not). Nil when it
    /// was refused; `.some(nil)` when there was nothing to build.
    private static func build(
        _ spec: PolicySpec,
        current: PolicySpec?,
        rebuild: Bool,
        _ channelName: String,
        _ makePolicy: MakePolicy,
        _ decision: inout Decision
    ) -> (spec: PolicySpec, policy: any LoadBalancingPolicy)?? {
        guard spec != current || rebuild else { return .some(nil) }
        do throws(L4LBError) {
            let policy = try makePolicy(spec)
            decision.applied += 1
            return .some((spec, policy))
        } catch {
            Self.refuse("message on \(channelName)", spec.description, error.message, &decision)
            return nil
        }
    }

    /// Notes one pool change as the change, with the pool's size after it; true if there was one.
    private static func note(_ change: PoolEditor.Change?, backends: Int, _ decision: inout Decision) -> Bool {
        guard let change else { return false }
        let what: String
        switch change {
        case .added(let spec): what = "added \(spec)"
        case .updated(let spec): what = "updated \(spec)"
        case .removed(let address): what = "removed \(address)"
        }
        decision.notes.append(.info("pool change: \(what)", metadata: ["backends": "\(backends)"]))
        return true
    }

    // MARK: Keys

    /// The `policy` key's value, read at (re)connect.
    mutating func policyKey(_ text: String, makePolicy: MakePolicy) -> Decision {
        var decision = Decision()
        let key = self.names.policyKey
        if let built = Self.adopt(
            text,
            key: key,
            current: self.policy,
            refused: &self.refusedPolicyValue,
            makePolicy,
            &decision
        ) {
            decision.policy = built
            self.policy = built.spec
            decision.notes.append(.info("policy from Redis", metadata: ["policy": "\(built.spec)"]))
        }
        return decision
    }

    /// The `shadowPolicy` key's value (nil when the key is missing), read at (re)connect.
    mutating func shadowKey(_ text: String?, makePolicy: MakePolicy) -> Decision {
        var decision = Decision()
        guard let text else {
            if self.shadow != nil {
                self.shadow = nil
                decision.shadow = .some(nil)
                decision.applied = 1
                decision.notes.append(.info("shadow policy cleared (no key in Redis)", metadata: [:]))
            }
            return decision
        }
        let key = self.names.shadowPolicyKey
        if let built = Self.adopt(
            text,
            key: key,
            current: self.shadow,
            refused: &self.refusedShadowValue,
            makePolicy,
            &decision
        ) {
            decision.shadow = .some(built)
            self.shadow = built.spec
            decision.notes.append(.info("shadow policy from Redis", metadata: ["policy": "\(built.spec)"]))
        }
        return decision
    }

    /// A policy key's value: built when it differs from `current`. A value that fails to parse or
    /// to build is refused once, not on every reconnect (`refused` remembers it until a good one).
    private static func adopt(
        _ text: String,
        key: String,
        current: PolicySpec?,
        refused: inout String?,
        _ makePolicy: MakePolicy,
        _ decision: inout Decision
    ) -> (spec: PolicySpec, policy: any LoadBalancingPolicy)? {
        do throws(L4LBError) {
            let spec = try PolicySpec(parsing: text)
            guard spec != current else {
                refused = nil
                return nil
            }
            let policy = try makePolicy(spec)
            // Cleared only once built: a value that parses but does not build is refused once too.
            refused = nil
            decision.applied = 1
            return (spec, policy)
        } catch {
            guard text != refused else { return nil }
            refused = text
            Self.refuse("key \(key)", text, error.message, &decision)
            return nil
        }
    }

    /// The `serverPool` key's value, read at (re)connect.
    mutating func poolKey(_ text: String, pool current: [BackendSpec]) -> Decision {
        var decision = Decision()
        do throws(L4LBError) {
            let specs = try PoolDocument.decode(text)
            self.refusedPoolValue = nil
            guard specs != current else { return decision }
            decision.pool = specs
            decision.applied = 1
            decision.notes.append(.info("pool from Redis", metadata: ["backends": "\(specs.count)"]))
        } catch {
            guard text != self.refusedPoolValue else { return decision }
            self.refusedPoolValue = text
            Self.refuse("key \(self.names.serverPoolKey)", text, error.message, &decision)
        }
        return decision
    }

    private static func refuse(_ what: String, _ payload: String, _ reason: String, _ decision: inout Decision) {
        decision.refused += 1
        let shown = payload.count > 200 ? String(payload.prefix(200)) + "..." : payload
        decision.notes.append(.warning("refused \(what): \(reason)", metadata: ["payload": shown]))
    }
}
