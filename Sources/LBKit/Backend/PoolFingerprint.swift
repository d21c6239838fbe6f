/// A short stable hash of a pool (its entries, in order, with weights and regions): two instances
/// run the same pool exactly when their fingerprints match, and `l4lb ctl instances` compares each
/// instance's with the `serverPool` key's.
public enum PoolFingerprint {
    public static func of(_ specs: [BackendSpec]) -> String {
        let hash = StableHash.string(specs.map(\.description).joined(separator: "\n"), seed: 0x504F_4F4C)
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
