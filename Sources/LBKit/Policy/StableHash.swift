/// Hashes that every l4lb instance computes alike, on any host and in any process: for policies
/// whose instances must agree without talking (maglev). Swift's `Hasher` is seeded per process, so
/// it cannot be used for this.
public enum StableHash {
    /// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
    @inlinable
    public static func mix(_ value: UInt64) -> UInt64 {
        var x = value
        x ^= x >> 33
        x &*= 0xFF51_AFD7_ED55_8CCD
        x ^= x >> 33
        x &*= 0xC4CE_B9FE_1A85_EC53
        x ^= x >> 33
        return x
    }

    /// FNV-1a over `text`'s UTF-8 bytes, started from `seed`, then mixed.
    public static func string(_ text: String, seed: UInt64) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325 ^ Self.mix(seed)
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return Self.mix(hash)
    }
}

extension ClientAddress {
    /// A hash of the address (and the port, when asked), the same in every l4lb instance.
    @inlinable
    public func stableHash(includingPort: Bool) -> UInt64 {
        let (high, low) = self.addressWords
        var hash = StableHash.mix(high.littleEndian ^ 0x9E37_79B9_7F4A_7C15)
        hash = StableHash.mix(hash ^ low.littleEndian ^ UInt64(self.family.rawValue))
        if includingPort {
            hash = StableHash.mix(hash ^ UInt64(self.port))
        }
        return hash
    }
}
