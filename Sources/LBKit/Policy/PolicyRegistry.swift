import NIOConcurrencyHelpers

/// Maps policy names to factories. Built-in policies register here at start, then the plugin
/// catalog registers each plugin it loaded (`PluginCatalog.register`).
public final class PolicyRegistry: Sendable {
    public typealias Factory = @Sendable (PolicySpec) throws(L4LBError) -> any LoadBalancingPolicy

    private let factories = NIOLockedValueBox<[String: Factory]>([:])

    public init() {}

    /// Registers `factory` under `name`, replacing an earlier one.
    public func register(_ name: String, factory: @escaping Factory) {
        self.factories.withLockedValue { $0[name] = factory }
    }

    public var names: [String] {
        self.factories.withLockedValue { Array($0.keys) }.sorted()
    }

    /// Creates the policy `spec` names, or throws a one-line error that lists the available names.
    public func makePolicy(_ spec: PolicySpec) throws(L4LBError) -> any LoadBalancingPolicy {
        guard let factory = self.factories.withLockedValue({ $0[spec.name] }) else {
            throw L4LBError(
                .unknownPolicy,
                "unknown policy '\(spec.name)' (available: \(self.names.joined(separator: ", ")))"
            )
        }
        return try factory(spec)
    }
}
