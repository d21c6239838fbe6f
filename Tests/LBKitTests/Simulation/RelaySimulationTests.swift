import Foundation
import Testing

@testable import LBKit

/// The relay loop on a simulated kernel, over thousands of seeded runs (`RelaySimulation`).
///
/// `SIMULATION_SEED=N swift test --filter RelaySimulation` replays one seed and prints its scenario;
/// `SIMULATION_SEEDS=N` runs N seeds instead of the default (scripts/simulate runs a million).
@Suite("Relay simulation")
struct RelaySimulationTests {
    static let environment = ProcessInfo.processInfo.environment

    /// The seeds of this run, in batches that run in parallel.
    static let batches: [ClosedRange<UInt64>] = {
        if let seed = Self.environment["SIMULATION_SEED"].flatMap(UInt64.init) { return [seed...seed] }
        let first = Self.environment["SIMULATION_FIRST_SEED"].flatMap(UInt64.init) ?? 1
        let count = max(1, Self.environment["SIMULATION_SEEDS"].flatMap(UInt64.init) ?? 10_000)
        let batches = UInt64(min(8, count))
        let size = (count + batches - 1) / batches
        return stride(from: first, to: first + count, by: Int(size)).map { $0...min($0 + size - 1, first + count - 1) }
    }()

    // Serialized: one core for the simulation, so that the suite's real-socket tests keep the other.
    @Test("every invariant holds after every step of every seed", .serialized, arguments: Self.batches)
    func seeds(_ seeds: ClosedRange<UInt64>) {
        var failures = 0
        for seed in seeds {
            let started = ContinuousClock.now
            let outcome = RelaySimulation(seed: seed).run()
            if Self.environment["SIMULATION_VERBOSE"] != nil {
                print("seed \(seed): \(ContinuousClock.now - started), \(outcome.turns) turns")
            }
            if Self.environment["SIMULATION_SEED"] != nil {
                print(
                    "seed \(seed): \(outcome.scenario); \(outcome.turns) turns, \(outcome.clients) clients, \(outcome.backendConnections) backend connections, \(outcome.staleEvents) stale events dropped"
                )
            }
            guard !outcome.violations.isEmpty else { continue }
            failures += 1
            Issue.record(
                """
                seed \(seed) failed; replay with SIMULATION_SEED=\(seed)
                scenario: \(outcome.scenario)
                \(outcome.violations.prefix(5).joined(separator: "\n"))
                """
            )
            // A few failing seeds say enough; the rest of the batch would repeat them.
            if failures >= 3 { return }
        }
    }
}

/// The simulation must catch a defect planted in the relay: each of these is one a close read found
/// in the relay before the simulation existed.
@Suite("Relay simulation catches planted defects")
struct PlantedDefectTests {
    /// Seeds tried before a planted defect must have been caught: far fewer than CI runs.
    static let budget: UInt64 = 3000

    @Test(
        "a planted defect fails a seed",
        arguments: [
            RelayLoop<SimulatedKernel>.PlantedBug.trafficRestartsEveryTimer,
            .retryKeepsRegistration,
        ]
    )
    func caught(_ bug: RelayLoop<SimulatedKernel>.PlantedBug) {
        for seed in 1...Self.budget {
            let outcome = RelaySimulation(seed: seed, plantedBugs: [bug]).run()
            if let first = outcome.violations.first {
                print("\(bug) caught by seed \(seed): \(first)")
                return
            }
        }
        Issue.record("\(bug) was not caught in \(Self.budget) seeds")
    }
}
