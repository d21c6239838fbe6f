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
}
