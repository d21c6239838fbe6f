import CLBPolicy
import Foundation

/// Where the geo plugin reports what it does: l4lb's log through the host's `log` (ABI 1.1), or
/// stderr when an l4lb that speaks ABI 1.0 loaded it.
enum GeoLog {
    /// Set once by the entry point, before any instance exists; l4lb keeps it valid for good.
    nonisolated(unsafe) static var host: UnsafePointer<l4lb_host>?

    static func write(_ level: Int32, _ message: String) {
        if let host, let log = host.pointee.log {
            var message = message
            message.withUTF8 { bytes in
                bytes.withMemoryRebound(to: CChar.self) { log(host, level, $0.baseAddress, $0.count) }
            }
        } else {
            FileHandle.standardError.write(Data("l4lb-policy-geo: \(message)\n".utf8))
        }
    }
}
