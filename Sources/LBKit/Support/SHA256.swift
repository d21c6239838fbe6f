import CSHA256

/// SHA-256, for naming a plugin file's version by its content as `sha256sum` does, so that an
/// operator can compare what l4lb loaded with the file on disk. Not on any hot path, but on every
/// start: the digest itself is computed in C (see sha256.c for why).
public enum SHA256 {
    /// The digest of `bytes` as 64 lowercase hex digits.
    public static func hex(_ bytes: some Collection<UInt8>) -> String {
        let message = Array(bytes)
        var digest = [UInt8](repeating: 0, count: 32)
        message.withUnsafeBufferPointer { input in
            digest.withUnsafeMutableBufferPointer { output in
                l4lb_sha256(input.baseAddress, input.count, output.baseAddress)
            }
        }
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
