import LBKit

/// The policies compiled into l4lb. round-robin and least-connections take no configuration (a spec
/// that gives one is refused rather than silently ignored); maglev takes its table size and hash.
public enum BuiltinPolicies {
    public static let names = [RoundRobinPolicy.name, LeastConnectionsPolicy.name, MaglevPolicy.name]

    /// Registers every built-in policy in `registry`.
    public static func register(in registry: PolicyRegistry) {
        registry.register(RoundRobinPolicy.name) { spec throws(L4LBError) in
            try requireNoConfiguration(spec)
            return RoundRobinPolicy()
        }
        registry.register(LeastConnectionsPolicy.name) { spec throws(L4LBError) in
            try requireNoConfiguration(spec)
            return LeastConnectionsPolicy()
        }
        registry.register(MaglevPolicy.name) { spec throws(L4LBError) in
            try MaglevPolicy(spec: spec)
        }
    }

    /// A registry holding the built-in policies.
    public static func makeRegistry() -> PolicyRegistry {
        let registry = PolicyRegistry()
        register(in: registry)
        return registry
    }

    private static func requireNoConfiguration(_ spec: PolicySpec) throws(L4LBError) {
        guard try spec.configurationObject().isEmpty else {
            throw L4LBError(.invalidPolicyConfiguration, "policy '\(spec.name)' takes no configuration")
        }
    }
}
