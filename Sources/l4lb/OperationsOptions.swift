import ArgumentParser
import LBKit
import LBOperations

/// The flags of running l4lb as a service: daemon mode, pid and log files, the admin endpoint, the
/// access log, and PROXY protocol toward backends.
struct OperationsOptions: ParsableArguments {
    @Flag(help: "Detach and run in the background (for systems without systemd); needs --log-file.")
    var daemon = false

    @Option(help: "Write the process id here, locked: a second l4lb on the same file refuses to start.")
    var pidFile: String?

    @Option(help: "Write the event log to this file instead of standard error; SIGHUP reopens it.")
    var logFile: String?

    @Option(help: "Event log format: text or json.")
    var logFormat: String = "text"

    @Option(help: "Serve /metrics, /status and /healthz on HOST:PORT (or PORT, on 127.0.0.1). Off unless given.")
    var admin: String?

    @Option(help: "One line per closed connection to FILE, or - for standard output. Off unless given.")
    var accessLog: String?

    @Option(help: "Access log format: logfmt or json.")
    var accessLogFormat: String = "logfmt"

    @Option(help: "Send a PROXY protocol header (v1 or v2) to backends, so that they see client addresses.")
    var sendProxyProtocol: String?

    struct Settings {
        var daemon: Bool
        var pidFile: String?
        var logFile: String?
        var logFormat: LineLogHandler.Format
        var admin: HostAndPort?
        var accessLog: String?
        var accessLogFormat: AccessLog.Format
        var sendProxyProtocol: ProxyProtocolEncoder.Version?
    }

    func makeSettings() throws(L4LBError) -> Settings {
        guard let logFormat = LineLogHandler.Format(rawValue: self.logFormat) else {
            throw L4LBError(.invalidValue, "--log-format must be text or json")
        }
        guard let accessLogFormat = AccessLog.Format(rawValue: self.accessLogFormat) else {
            throw L4LBError(.invalidValue, "--access-log-format must be logfmt or json")
        }
        var sendProxyProtocol: ProxyProtocolEncoder.Version?
        if let version = self.sendProxyProtocol {
            guard let parsed = ProxyProtocolEncoder.Version(rawValue: version) else {
                throw L4LBError(.invalidValue, "--send-proxy-protocol must be v1 or v2")
            }
            sendProxyProtocol = parsed
        }
        var admin: HostAndPort?
        if let text = self.admin {
            if let port = Int(text), (1...65_535).contains(port) {
                admin = HostAndPort(host: "127.0.0.1", port: port)
            } else {
                do {
                    admin = try HostAndPort(parsing: text, allowPortZero: true)
                } catch {
                    throw L4LBError(.invalidAddress, "--admin: \(error.message)")
                }
            }
        }
        if self.daemon && self.logFile == nil {
            throw L4LBError(.invalidValue, "--daemon needs --log-file: a daemon has no terminal to log to")
        }
        if let accessLog = self.accessLog {
            try AccessLog.checkWritable(accessLog)
        }
        return Settings(
            daemon: self.daemon,
            pidFile: self.pidFile,
            logFile: self.logFile,
            logFormat: logFormat,
            admin: admin,
            accessLog: self.accessLog,
            accessLogFormat: accessLogFormat,
            sendProxyProtocol: sendProxyProtocol
        )
    }
}
