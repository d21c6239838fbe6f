import LBKit

/// An in-process Swift policy: the first backend that is not excluded.
final class FirstHealthy: LoadBalancingPolicy {
    let name = "first-healthy"

    func makeSelector(for pool: BackendPool) -> any BackendSelector { Selector(pool: pool) }

    struct Selector: BackendSelector {
        let pool: BackendPool
        func pick(for client: ClientAddress, excluding excluded: BackendExclusions) -> Int? {
            (0..<self.pool.count).first { self.pool.isEligible($0, excluding: excluded) }
        }
    }
}

let router = Router(policy: FirstHealthy())
try router.setPool([try BackendSpec(parsing: "127.0.0.1:9001"), try BackendSpec(parsing: "127.0.0.1:9002,weight=2")])
let picked = router.table.selector.pick(for: .unspecified, excluding: .none)
print(
    "embedded LBKit: policy \(router.policy.name), \(router.pool.count) backends, picked \(picked.map { "\($0)" } ?? "none")"
)
