import CLBPolicy
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// What l4lb offers one plugin through `l4lb_host` (ABI 1.1): a log, so that a plugin reports what it
/// does (a database reloaded, a new file refused) in l4lb's own log, format and destination, tagged
/// with its name, instead of writing to stderr, which a daemon does not have.
///
/// A plugin may log from any thread and may keep the `l4lb_host` pointer for as long as it runs;
/// since plugins are never unloaded, the host lives for the life of the process (it is retained by
/// the C struct's context and never released).
public final class PluginHost: Sendable {
    /// Lines per plugin per second; the rest are counted and the count is logged with the next line,
    /// so that a plugin logging on every pick cannot flood the log or slow its relay thread for long.
    public static let linesPerSecond = 20
    /// Longest message kept, in bytes; one line.
    public static let maximumMessageBytes = 1024

    private struct State {
        var name: String
        var limiter = RateLimiter(limit: PluginHost.linesPerSecond, window: .seconds(1))
    }

    private let state: NIOLockedValueBox<State>
    /// Monotonic nanoseconds; injected by tests so that a second passes without sleeping.
    private let clock: @Sendable () -> Int64
    private let makeLogger: @Sendable () -> Logger
    /// The C view handed to the plugin. Written once here, then only read.
    public nonisolated(unsafe) let services: UnsafeMutablePointer<l4lb_host>

    /// - Parameters:
    ///   - path: the plugin's file, its tag until it declares a name.
    ///   - makeLogger: the logger for each line; by default one from the process's logging system, made
    ///     per line so that it follows the operator's --log-format and --log-level.
    ///   - clock: monotonic nanoseconds, for the lines-per-second window.
    public init(
        path: String,
        makeLogger: @escaping @Sendable () -> Logger = { Logger(label: "l4lb") },
        clock: @escaping @Sendable () -> Int64 = { Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds) }
    ) {
        self.state = NIOLockedValueBox(State(name: path))
        self.clock = clock
        self.makeLogger = makeLogger
        self.services = .allocate(capacity: 1)
        self.services.initialize(
            to: l4lb_host(
                struct_size: UInt32(MemoryLayout<l4lb_host>.size),
                log: pluginHostLog,
                context: nil
            )
        )
        // Retained for good: the plugin may use the pointer until the process exits.
        self.services.pointee.context = Unmanaged.passRetained(self).toOpaque()
    }

    /// Tags later lines with the name the plugin declared.
    func named(_ name: String) {
        self.state.withLockedValue { $0.name = name }
    }

    /// Logs one line from the plugin, unless it has used up this second's lines.
    public func log(level: Int32, message: String) {
        let now = self.clock()
        let admitted: (name: String, heldBack: Int)? = self.state.withLockedValue { state in
            state.limiter.admit(now: now).map { (state.name, $0) }
        }
        guard let admitted else { return }
        var metadata: Logger.Metadata = ["plugin": "\(admitted.name)"]
        if admitted.heldBack > 0 { metadata["suppressed"] = "\(admitted.heldBack)" }
        self.makeLogger().log(level: Self.level(level), "\(message)", metadata: metadata)
    }

    private static func level(_ level: Int32) -> Logger.Level {
        switch level {
        case ..<L4LB_LOG_INFO: .debug
        case L4LB_LOG_INFO: .info
        case L4LB_LOG_WARNING: .warning
        default: .error
        }
    }

    /// The line a plugin's bytes make: valid UTF-8, up to the first newline, at most
    /// `maximumMessageBytes`.
    static func line(_ bytes: UnsafeRawBufferPointer) -> String {
        var line = bytes.prefix(Self.maximumMessageBytes)
        if let newline = line.firstIndex(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) {
            line = line[..<newline]
        }
        return String(decoding: line, as: UTF8.self)
    }
}

/// `l4lb_host.log`. A global function, not a closure, so that it is a plain C function pointer that
/// any plugin thread can call.
private func pluginHostLog(
    _ host: UnsafePointer<l4lb_host>?,
    _ level: Int32,
    _ message: UnsafePointer<CChar>?,
    _ length: Int
) {
    guard let context = host?.pointee.context, let message, length > 0 else { return }
    let pluginHost = Unmanaged<PluginHost>.fromOpaque(context).takeUnretainedValue()
    pluginHost.log(level: level, message: PluginHost.line(UnsafeRawBufferPointer(start: message, count: length)))
}
