import LBKit
import Testing

@testable import LBControlPlane

/// The control plane's decisions without Redis: bursts of messages and key values in, pool,
/// policy, Redis commands, log lines and counts out.
@Suite("Control decisions")
struct ControlDecisionsTests {
    final class NamedPolicy: LoadBalancingPolicy {
        let name: String
        init(name: String) { self.name = name }
        func makeSelector(for pool: BackendPool) -> any BackendSelector { Nothing() }
        struct Nothing: BackendSelector {
            func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? { nil }
        }
    }

    let a = BackendSpec(address: HostAndPort(host: "10.0.0.1", port: 80))
    let b = BackendSpec(address: HostAndPort(host: "10.0.0.2", port: 80))
    let names = RedisNames(prefix: nil)

    /// Builds any policy but "broken", and records what it was asked to build.
    final class Builder: @unchecked Sendable {
        var built: [PolicySpec] = []
        func make(_ spec: PolicySpec) throws(L4LBError) -> any LoadBalancingPolicy {
            self.built.append(spec)
            guard spec.name != "broken" else { throw L4LBError(.invalidPolicyConfiguration, "broken on purpose") }
            return NamedPolicy(name: spec.name)
        }
    }

    func message(_ channel: ControlChannel, _ payload: String) -> ControlDecisions.Message {
        .init(channel: channel, channelName: channel.rawValue, payload: payload)
    }

    func noResolve(_ address: HostAndPort) throws(L4LBError) {}

    @Test("a burst of pool messages is one pool change and one key update, with each change noted")
    func burst() {
        var decisions = ControlDecisions(names: self.names, policy: PolicySpec(name: "round-robin"))
        let builder = Builder()
        let decision = decisions.messages(
            [
                self.message(.addServer, "10.0.0.1:80"), self.message(.addServer, "10.0.0.2:80"),
                self.message(.removeServer, "10.0.0.1:80"), self.message(.addServer, "10.0.0.2:80,weight=3"),
            ],
            pool: [],
            makePolicy: builder.make,
            resolve: self.noResolve
        )
        let heavier = BackendSpec(address: self.b.address, weight: 3)
        #expect(decision.pool == [heavier])
        #expect(decision.applied == 1)
        #expect(decision.refused == 0)
        #expect(decision.policy == nil)
        #expect(decision.notes.count == 4)
        #expect(decision.notes.last == .info("pool change: updated \(heavier)", metadata: ["backends": "1"]))
        #expect(decision.commands.count == 1)
        let eval = decision.commands[0]
        #expect(
            Array(eval.prefix(7)) == [
                "EVAL", PoolUpdateScript.source, "2", "serverPool", "serverPool:meta", PoolDocument.encode([heavier]),
                PoolFingerprint.of([heavier]),
            ]
        )
        #expect(eval.count == 7 + 4 * 3)
        #expect(Array(eval[7..<10]) == ["add", "10.0.0.1:80", "\"10.0.0.1:80\""])
        #expect(Array(eval[13..<16]) == ["remove", "10.0.0.1:80", ""])
        #expect(builder.built.isEmpty)
    }

    @Test("a message that changes nothing installs nothing but still updates the key")
    func unchanged() {
        var decisions = ControlDecisions(names: self.names, policy: PolicySpec(name: "round-robin"))
        let decision = decisions.messages(
            [self.message(.addServer, "10.0.0.1:80"), self.message(.removeServer, "10.0.0.9:80")],
            pool: [self.a],
            makePolicy: Builder().make,
            resolve: self.noResolve
        )
        #expect(decision.pool == nil)
        #expect(decision.applied == 0)
        #expect(decision.notes.isEmpty)
        #expect(decision.commands.count == 1)
    }

    @Test("bad messages are refused one by one; the rest of the burst is applied")
    func refusals() {
        var decisions = ControlDecisions(names: self.names, policy: PolicySpec(name: "round-robin"))
        let decision = decisions.messages(
            [
                self.message(.addServer, "10.0.0.1:0"), self.message(.addServer, "nowhere.invalid:80"),
                self.message(.addServer, "10.0.0.2:80"),
            ],
            pool: [],
            makePolicy: Builder().make,
            resolve: { address throws(L4LBError) in
                if address.host.hasSuffix(".invalid") {
                    throw L4LBError(.invalidAddress, "cannot resolve \(address.host)")
                }
            }
        )
        #expect(decision.refused == 2)
        #expect(decision.pool == [self.b])
        let warnings = decision.notes.filter { if case .warning = $0 { true } else { false } }
        #expect(warnings.count == 2)
        #expect(
            warnings.last
                == .warning(
                    "refused message on addServer: cannot resolve nowhere.invalid",
                    metadata: ["payload": "nowhere.invalid:80"]
                )
        )
    }

    @Test(
        "setPolicy: the spec in force builds nothing; a new one is built and written; one that fails to build is refused"
    )
    func policies() {
        var decisions = ControlDecisions(names: self.names, policy: PolicySpec(name: "round-robin"))
        let builder = Builder()
        let same = decisions.messages(
            [self.message(.setPolicy, "round-robin")],
            pool: [],
            makePolicy: builder.make,
            resolve: self.noResolve
        )
        #expect(builder.built.isEmpty)
        #expect(same.policy == nil && same.applied == 0)
        #expect(same.commands == [["SET", "policy", "round-robin"]])

        let changed = decisions.messages(
            [self.message(.setPolicy, "least-connections")],
            pool: [],
            makePolicy: builder.make,
            resolve: self.noResolve
        )
        #expect(changed.policy?.policy.name == "least-connections")
        #expect(changed.applied == 1)
        #expect(decisions.policy == PolicySpec(name: "least-connections"))
        #expect(changed.commands == [["SET", "policy", "least-connections"]])

        let broken = decisions.messages(
            [self.message(.setPolicy, "broken")],
            pool: [],
            makePolicy: builder.make,
            resolve: self.noResolve
        )
        #expect(broken.policy == nil && broken.refused == 1 && broken.commands.isEmpty)
        #expect(decisions.policy == PolicySpec(name: "least-connections"))
    }

    @Test("key values: adopted when they differ; a broken value is reported once, not on every reconnect")
    func keys() {
        var decisions = ControlDecisions(names: RedisNames(prefix: "blue"), policy: PolicySpec(name: "round-robin"))
        let builder = Builder()
        #expect(decisions.poolKey(#"["10.0.0.1:80"]"#, pool: [self.a]).pool == nil)
        let adopted = decisions.poolKey(#"["10.0.0.2:80"]"#, pool: [self.a])
        #expect(adopted.pool == [self.b] && adopted.applied == 1)

        let broken = decisions.poolKey("[1,", pool: [self.a])
        #expect(broken.refused == 1 && broken.pool == nil)
        #expect(
            broken.notes.first.map {
                if case .warning(let text, _) = $0 { text.hasPrefix("refused key blue:serverPool") } else { false }
            } == true
        )
        #expect(decisions.poolKey("[1,", pool: [self.a]).refused == 0)

        #expect(decisions.policyKey("round-robin", makePolicy: builder.make).policy == nil)
        #expect(decisions.policyKey("broken", makePolicy: builder.make).refused == 1)
        #expect(decisions.policyKey("broken", makePolicy: builder.make).refused == 0)
        #expect(
            decisions.policyKey("least-connections", makePolicy: builder.make).policy?.spec.name == "least-connections"
        )
    }

    @Test(
        "setShadowPolicy builds once per new spec and keeps it in its key; clearShadowPolicy removes both; a bad one is refused"
    )
    func shadowMessages() {
        var decisions = ControlDecisions(names: self.names, policy: PolicySpec(name: "round-robin"))
        let builder = Builder()
        func send(_ messages: [ControlDecisions.Message]) -> ControlDecisions.Decision {
            decisions.messages(messages, pool: [], makePolicy: builder.make, resolve: self.noResolve)
        }
        let first = send([self.message(.setShadowPolicy, "maglev"), self.message(.setShadowPolicy, "maglev")])
        #expect(builder.built == [PolicySpec(name: "maglev")], "the repeat built nothing")
        #expect(first.shadow??.spec == PolicySpec(name: "maglev"))
        #expect(first.commands == [["SET", "shadowPolicy", "maglev"], ["SET", "shadowPolicy", "maglev"]])
        #expect(decisions.shadow == PolicySpec(name: "maglev") && decisions.policy == PolicySpec(name: "round-robin"))

        let refused = send([self.message(.setShadowPolicy, "broken"), self.message(.setShadowPolicy, "no spaces {")])
        #expect(refused.refused == 2 && refused.shadow == nil && refused.commands.isEmpty)
        #expect(decisions.shadow == PolicySpec(name: "maglev"), "a refused shadow leaves the one in force")

        let cleared = send([self.message(.clearShadowPolicy, "")])
        #expect(cleared.shadow.map { $0 == nil } == true)
        #expect(cleared.commands == [["DEL", "shadowPolicy"]])
        #expect(decisions.shadow == nil)

        // The key read at a reconnect: present installs, missing clears, broken is reported once.
        #expect(
            decisions.shadowKey("least-connections", makePolicy: builder.make).shadow??.spec.name == "least-connections"
        )
        #expect(decisions.shadowKey("broken", makePolicy: builder.make).refused == 1)
        #expect(decisions.shadowKey("broken", makePolicy: builder.make).refused == 0)
        #expect(decisions.shadowKey(nil, makePolicy: builder.make).shadow.map { $0 == nil } == true)
    }

    @Test("explain requests: answered when addressed to all or to this instance; malformed ones are refused")
    func explainRequests() {
        var decisions = ControlDecisions(
            names: self.names,
            policy: PolicySpec(name: "round-robin"),
            instance: "lb-1"
        )
        let builder = Builder()
        let decision = decisions.messages(
            [
                self.message(.explain, #"{"id": "a1", "client": "192.0.2.7"}"#),
                self.message(.explain, #"{"id": "a2", "client": "2001:db8::1", "port": 443, "instance": "lb-1"}"#),
                self.message(.explain, #"{"id": "a3", "client": "192.0.2.7", "instance": "lb-2"}"#),
                self.message(.explain, #"{"id": "a4", "client": "not-an-ip"}"#),
                self.message(.explain, #"{"id": "../../etc", "client": "192.0.2.7"}"#),
                self.message(.explain, #"{"id": "a6", "client": "192.0.2.7", "port": 70000}"#),
                self.message(.explain, "not json"),
            ],
            pool: [],
            makePolicy: builder.make,
            resolve: self.noResolve
        )
        #expect(decision.explain.map(\.id) == ["a1", "a2"])
        #expect(decision.explain.last?.client == ClientAddress(text: "2001:db8::1", port: 443))
        #expect(decision.refused == 4)
        #expect(decision.applied == 0 && decision.commands.isEmpty && builder.built.isEmpty)
    }

    @Test("explain requests are answered at most 50 a second; the dropped ones are counted and told once")
    func explainRateLimit() {
        var decisions = ControlDecisions(names: self.names, policy: PolicySpec(name: "round-robin"))
        let builder = Builder()
        let burst = (0..<60).map { self.message(.explain, #"{"id": "r\#($0)", "client": "192.0.2.7"}"#) }
        let first = decisions.messages(burst, pool: [], makePolicy: builder.make, resolve: self.noResolve, now: 0)
        #expect(first.explain.count == 50 && first.refused == 10 && first.notes.isEmpty)
        let later = decisions.messages(
            [self.message(.explain, #"{"id": "late", "client": "192.0.2.7"}"#)],
            pool: [],
            makePolicy: builder.make,
            resolve: self.noResolve,
            now: 1_000_000_000
        )
        #expect(later.explain.map(\.id) == ["late"])
        #expect(
            later.notes == [.warning("dropped 10 explain requests: at most 50 a second are answered", metadata: [:])]
        )
    }
}
