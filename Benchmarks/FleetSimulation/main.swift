import Foundation
import LBKit
import Policies

// A day of pool changes across a fleet, simulated with l4lb's own maglev and the control plane's
// delivery model, to back docs/scale-out.md:
// - 50 instances, 1,000 backends, 20,000 sampled clients;
// - a pool change every 5 minutes on average (adds, removes, weight changes; 288 in a day);
// - every instance gets each change after a pub/sub delay of 1-20 ms, except while it is cut off
//   from Redis (each instance has two outages a day of 5-60 s); it catches up with the key when it
//   reconnects, as l4lb does;
// - counted: instance-seconds spent on another pool than the key's; for each change, the clients
//   whose backend moved with maglev, and with a modulo hash over the same pool (source-hash's way);
//   and, over the day, the share of client-seconds on which two instances would disagree.
//
// Usage: scripts/simulate-fleet [instances] [backends] [seed]

/// A seeded generator, so that a run can be repeated.
final class Seeded {
    private var state: UInt64
    init(_ seed: UInt64) { self.state = seed }
    func next() -> UInt64 {
        self.state = StableHash.mix(self.state &+ 0x9E37_79B9_7F4A_7C15)
        return self.state
    }
    func uniform(_ range: ClosedRange<Double>) -> Double {
        range.lowerBound + Double(self.next() % 1_000_000) / 1_000_000 * (range.upperBound - range.lowerBound)
    }
}

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let instances = arguments.count > 0 ? arguments[0] : 50
let backendCount = arguments.count > 1 ? arguments[1] : 1_000
let generator = Seeded(UInt64(arguments.count > 2 ? arguments[2] : 1))
let day = 86_400.0
let clients = 20_000

nonisolated func spec(_ index: Int, weight: Int = 1) -> BackendSpec {
    BackendSpec(
        address: HostAndPort(host: "10.\(index / 65_536 % 256).\(index / 256 % 256).\(index % 256)", port: 80),
        weight: weight
    )
}

// The day's changes: time, and the pool after it.
var pool = (0..<backendCount).map { spec($0) }
var nextIndex = backendCount
var changes: [(time: Double, pool: [BackendSpec])] = []
var time = 0.0
while true {
    time += -log(max(1e-9, generator.uniform(0...1))) * 300
    guard time < day else { break }
    switch generator.next() % 3 {
    case 0:
        pool.append(spec(nextIndex, weight: Int(generator.next() % 4) + 1))
        nextIndex += 1
    case 1 where pool.count > 1:
        pool.remove(at: Int(generator.next() % UInt64(pool.count)))
    default:
        let position = Int(generator.next() % UInt64(pool.count))
        pool[position].weight = Int(generator.next() % 4) + 1
    }
    changes.append((time, pool))
}

// When each instance runs each version: the change's time plus delivery, or its reconnect time.
var disagreementSeconds = 0.0
var worstLag = 0.0
for _ in 0..<instances {
    let outages = (0..<2).map { _ -> ClosedRange<Double> in
        let start = generator.uniform(0...day)
        return start...(start + generator.uniform(5...60))
    }
    for change in changes {
        var applied = change.time + generator.uniform(0.001...0.020)
        if let outage = outages.first(where: { $0.contains(change.time) }) {
            applied = outage.upperBound + generator.uniform(0.05...0.5)  // reconnect, read the key
        }
        let lag = applied - change.time
        disagreementSeconds += lag
        worstLag = max(worstLag, lag)
    }
}

// Client moves per change: maglev against modulo, over the same pools.
let sample = (0..<clients).map { index -> ClientAddress in
    let word = UInt32(truncatingIfNeeded: StableHash.mix(UInt64(index) &+ 99))
    return ClientAddress(family: .ipv4, bytes: withUnsafeBytes(of: word.bigEndian) { Array($0) }, port: 0)
}
func maglevAssignment(_ specs: [BackendSpec]) -> [String] {
    let router = Router(policy: MaglevPolicy())
    try! router.setPool(specs)
    let table = router.table
    return sample.map { client in
        table.selector.pick(for: client, excluding: .none).map { table.pool.backends[$0].address.description } ?? "-"
    }
}
func moduloAssignment(_ specs: [BackendSpec]) -> [String] {
    sample.map { specs[Int($0.stableHash(includingPort: false) % UInt64(specs.count))].address.description }
}
var maglevMoved: [Double] = []
var moduloMoved: [Double] = []
var previous = (0..<backendCount).map { spec($0) }
var previousMaglev = maglevAssignment(previous)
var previousModulo = moduloAssignment(previous)
for change in changes {
    let maglev = maglevAssignment(change.pool)
    let modulo = moduloAssignment(change.pool)
    maglevMoved.append(Double(zip(previousMaglev, maglev).filter { $0 != $1 }.count) / Double(clients))
    moduloMoved.append(Double(zip(previousModulo, modulo).filter { $0 != $1 }.count) / Double(clients))
    (previous, previousMaglev, previousModulo) = (change.pool, maglev, modulo)
}
_ = previous

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
// While an instance lags, the clients that the change moved are the ones it disagrees on.
let disagreeingClientSeconds = disagreementSeconds / Double(instances) * median(maglevMoved)

print("### A day of pool changes: \(instances) instances, \(backendCount) backends, \(changes.count) changes")
print()
print("| measure | value |")
print("|---|---|")
print(
    String(
        format: "| instance-seconds on another pool than the key's, per instance per day | %.1f s |",
        disagreementSeconds / Double(instances)
    )
)
print(
    String(
        format: "| share of the day an instance runs another pool | %.5f%% |",
        disagreementSeconds / Double(instances) / day * 100
    )
)
print(String(format: "| longest lag of one instance behind one change (an outage) | %.1f s |", worstLag))
print(
    String(
        format: "| clients moved per change, maglev, median / max | %.2f%% / %.2f%% |",
        median(maglevMoved) * 100,
        (maglevMoved.max() ?? 0) * 100
    )
)
print(
    String(
        format: "| clients moved per change, modulo hash, median / max | %.2f%% / %.2f%% |",
        median(moduloMoved) * 100,
        (moduloMoved.max() ?? 0) * 100
    )
)
print(
    String(
        format: "| share of client-seconds two instances would disagree on (maglev) | %.6f%% |",
        disagreeingClientSeconds / day * 100
    )
)
