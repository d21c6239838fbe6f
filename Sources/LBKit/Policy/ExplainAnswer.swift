/// What `/explain` and `l4lb ctl explain` answer: which backend the active policy would pick for a
/// client now, and why; and, when a shadow policy is installed, what it would pick.
public struct ExplainAnswer: Codable, Sendable, Equatable {
    public struct Shadow: Codable, Sendable, Equatable {
        public var policy: String
        public var backend: String?
        public var steps: [String]
    }

    /// The instance that answered (through Redis; absent on the admin endpoint).
    public var instance: String?
    public var client: String
    public var policy: String
    public var backend: String?
    public var steps: [String]
    /// The steps as one line: `hash of 192.0.2.7 -> slot 8 of 65537 -> ... -> maglev: 10.0.0.7:80`.
    public var chain: String
    public var shadow: Shadow?

    /// Asks `router`'s policies; changes nothing.
    public init(router: Router, client: ClientAddress, instance: String? = nil) {
        let table = router.table
        let explanation = table.selector.explain(for: client, excluding: .none)
        self.instance = instance
        self.client = client.port == 0 ? client.addressText : client.description
        self.policy = table.policy.name
        self.backend = explanation.backend.map { table.pool[$0].address.description }
        self.steps = explanation.steps
        self.chain = explanation.steps.joined(separator: " -> ")
        self.shadow = table.shadow.map { route in
            let shadow = route.explain(client)
            return Shadow(
                policy: route.shadow.spec.name,
                backend: shadow.backend.map { table.pool[$0].address.description },
                steps: shadow.steps
            )
        }
    }
}
