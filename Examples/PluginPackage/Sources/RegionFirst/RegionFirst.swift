import L4LBPluginSDK

/// region-first {"region": "eu-west"}: the least-loaded healthy backend of one region, else of all.
final class RegionFirst: PolicyPlugin {
    static let name = "region-first"
    struct Configuration: Decodable { var region: String }
    let region: String

    init(configuration: String) throws(PluginError) {
        self.region = try PluginError.decode(Configuration.self, from: configuration).region
    }

    func pick(client: PluginAddress, backends: PluginBackends) -> Int? {
        leastLoaded(backends) { $0.regionIs(self.region) } ?? leastLoaded(backends) { _ in true }
    }

    func explain(client: PluginAddress, backends: PluginBackends) -> PluginExplanation {
        let inRegion = leastLoaded(backends) { $0.regionIs(self.region) }
        let chosen = inRegion ?? leastLoaded(backends) { _ in true }
        let step = chosen.map { "least loaded: \(backends[$0].name)" } ?? "no healthy backend"
        return PluginExplanation(steps: [inRegion != nil ? "region \(region)" : "any region", step], backend: chosen)
    }

    private func leastLoaded(_ backends: PluginBackends, where matches: (PluginBackend) -> Bool) -> Int? {
        var best: Int?  // a loop, not filter + min: a pick must not allocate
        for index in backends.indices where backends[index].isHealthy && matches(backends[index]) {
            if best.map({ backends[index].activeConnections < backends[$0].activeConnections }) ?? true { best = index }
        }
        return best
    }
}

@_cdecl("l4lb_policy_entry")
public func entry(_ d: UnsafeMutableRawPointer?, _ size: Int) -> Int32 { exportPolicy(RegionFirst.self, d, size) }
