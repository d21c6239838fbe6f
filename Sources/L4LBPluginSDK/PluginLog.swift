internal import CLBPolicy

#if canImport(Glibc)
import Glibc
#endif

/// A plugin's lines in l4lb's log (ABI 1.1), tagged with its name; on stderr under an l4lb that
/// speaks ABI 1.0. l4lb keeps at most 20 lines a second per plugin: log events (a file reloaded, a
/// bad input), never every pick.
public enum PluginLog {
    public enum Level: Int32, Sendable {
        case debug = 0
        case info = 1
        case warning = 2
        case error = 3
    }

    /// Set once by the entry point, before any instance exists; l4lb keeps it valid for good.
    nonisolated(unsafe) static var host: UnsafePointer<l4lb_host>?
    nonisolated(unsafe) static var pluginName = "plugin"

    public static func write(_ level: Level, _ message: String) {
        var message = message
        if let host = Self.host, let log = host.pointee.log {
            message.withUTF8 { bytes in
                bytes.withMemoryRebound(to: CChar.self) { log(host, level.rawValue, $0.baseAddress, $0.count) }
            }
        } else {
            let line = "l4lb-policy-\(Self.pluginName): \(message)\n"
            var bytes = Array(line.utf8)
            _ = Glibc.write(2, &bytes, bytes.count)
        }
    }

    public static func info(_ message: String) { Self.write(.info, message) }
    public static func warning(_ message: String) { Self.write(.warning, message) }
    public static func error(_ message: String) { Self.write(.error, message) }
}
