import LBKit

/// The shadow policy's counts summed over the instances that report one: the share of sampled
/// clients it would send to each region and backend, against the share of the pool each holds. A
/// pure function of the status documents, for `l4lb ctl shadow`.
struct ShadowFleetReport {
    let instances: [InstanceStatus.Document]

    var text: String {
        let shadows = self.instances.compactMap { document in document.shadow.map { (document, $0) } }
        guard let (_, first) = shadows.first else {
            return
                "no shadow policy on any of \(self.instances.count) live instance\(self.instances.count == 1 ? "" : "s")\n"
        }
        var lines: [String] = []
        let specs = Set(shadows.map(\.1.spec))
        lines.append(
            "shadow policy \(specs.count == 1 ? first.spec : specs.sorted().joined(separator: " | ")) on \(shadows.count) of \(self.instances.count) instances"
        )
        for (document, shadow) in shadows where shadow.dropped {
            lines.append("  \(document.instance): dropped after \(shadow.faults) fault\(shadow.faults == 1 ? "" : "s")")
        }
        let sampled = shadows.reduce(0) { $0 + $1.1.sampled }
        let agreed = shadows.reduce(0) { $0 + $1.1.agreed }
        let none = shadows.reduce(0) { $0 + $1.1.pickedNone }
        let actives = Set(shadows.map(\.0.policy)).sorted().joined(separator: ", ")
        lines.append(
            "sampled \(sampled) clients; agreed with the active policy (\(actives)) on \(Self.percent(agreed, of: sampled)); no backend for \(none)"
        )

        // Per backend, summed by address over the instances; the pool is taken from the first
        // instance that has each backend.
        var picks: [String: Int] = [:]
        var regions: [String: String] = [:]
        var order: [String] = []
        for (document, shadow) in shadows {
            for backend in document.backends where regions[backend.address] == nil {
                regions[backend.address] = backend.region ?? "-"
                order.append(backend.address)
            }
            for backend in shadow.backends {
                picks[backend.address, default: 0] += backend.picks
                if regions[backend.address] == nil {
                    regions[backend.address] = backend.region ?? "-"
                    order.append(backend.address)
                }
            }
        }
        let poolSize = order.count
        var regionPicks: [String: Int] = [:]
        var regionSizes: [String: Int] = [:]
        for address in order {
            let region = regions[address] ?? "-"
            regionPicks[region, default: 0] += picks[address] ?? 0
            regionSizes[region, default: 0] += 1
        }
        lines.append("by region (share of sampled clients, backends):")
        for region in regionPicks.keys.sorted(by: { (regionPicks[$0]!, $1) > (regionPicks[$1]!, $0) }) {
            lines.append(
                "  \(region)  \(Self.percent(regionPicks[region]!, of: sampled))  \(regionSizes[region]!) of \(poolSize) backends"
            )
        }
        lines.append("by backend:")
        for address in order {
            lines.append("  \(address)  \(regions[address] ?? "-")  \(Self.percent(picks[address] ?? 0, of: sampled))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func percent(_ part: Int, of whole: Int) -> String {
        guard whole > 0 else { return "-" }
        let tenths = (part * 1000 + whole / 2) / whole
        return "\(tenths / 10).\(tenths % 10)%"
    }
}
