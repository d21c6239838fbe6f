import FuzzSupport

/// The simulation's one source of randomness, seeded, so that a seed replays exactly.
typealias SimulationRandom = SplitMix64
