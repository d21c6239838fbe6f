import LBKit
import NIOCore

/// A pool of literal 127.0.0.1 backends on ports 9001, 9002, ... with the given weights.
func makeRouter(weights: [Int], policy: any LoadBalancingPolicy) throws -> Router {
    let router = Router(policy: policy)
    try router.setPool(
        weights.enumerated().map { index, weight in
            BackendSpec(address: HostAndPort(host: "127.0.0.1", port: 9001 + index), weight: weight)
        }
    )
    return router
}

let anyClient = ClientAddress(family: .ipv4, bytes: [192, 0, 2, 1], port: 40_000)
