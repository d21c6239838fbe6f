import NIOConcurrencyHelpers

/// Maps policy names to factories. Built-in policies register here at start, then the plugin
/// catalog registers each plugin it loaded (`PluginCatalog.register`).
public final class PolicyRegistry: Sendable {
    public typealias Factory = @Sendable (PolicySpec) throws(L4LBError) -> any LoadBalancingPolicy

    private let factories = NIOLockedValueBox<[String: Factory]>([:])
    /// For policies whose code can change while l4lb runs (plugins): whether it did.
    private let changeChecks = NIOLockedValueBox<[String: @Sendable () -> Bool]>([:])

    public init() {}

    /// Registers `factory` under `name`, replacing an earlier one. `changed` tells whether the code
    /// behind the name changed since the last policy was made (a new build of a plugin file).
    public func register(_ name: String, factory: @escaping Factory, changed: (@Sendable () -> Bool)? = nil) {
        self.factories.withLockedValue { $0[name] = factory }
        self.changeChecks.withLockedValue { $0[name] = changed }
    }

    /// Whether making `spec` again would give other code than the policy in force was made with:
    /// then a `setPolicy` repeating the spec in force is built, not skipped.
    public func codeChanged(for spec: PolicySpec) -> Bool {
        self.changeChecks.withLockedValue { $0[spec.name] }?() ?? false
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
