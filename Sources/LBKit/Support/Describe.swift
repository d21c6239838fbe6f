import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Short, operator-facing spellings of values that NIO prints verbosely.
public enum Describe {
    /// `127.0.0.1:8080` or `[::1]:8080` rather than NIO's `[IPv4]127.0.0.1/127.0.0.1:8080`.
    public static func address(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        switch address {
        case .v4, .v6:
            let ip = address.ipAddress ?? "?"
            let port = address.port ?? 0
            return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
        default:
            return "\(address)"
        }
    }

    /// `Connection refused` rather than the full `IOError` dump; other errors as they describe themselves.
    public static func error(_ error: Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode))
        }
        if let error = error as? ChannelError, case .connectTimeout(let timeout) = error {
            return "connect timed out after \(timeout)"
        }
        return "\(error)"
    }
}
