import LBKit

/// Where the control plane's Redis is: `redis://[[user]:password@]host[:port][/db]` or
/// `unix:///path/to/redis.sock`.
public struct RedisEndpoint: Hashable, Sendable, CustomStringConvertible {
    public enum Transport: Hashable, Sendable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var transport: Transport
    public var username: String?
    public var password: String?
    public var database: Int

    public init(transport: Transport, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.transport = transport
        self.username = username
        self.password = password
        self.database = database
    }

    public init(parsing text: String) throws(L4LBError) {
        let url = text.trimmingASCIIWhitespace()
        if url.hasPrefix("unix://") {
            let path = String(url.dropFirst("unix://".count))
            guard path.hasPrefix("/") else {
                throw L4LBError(.invalidValue, "--redis '\(text)': a unix URL needs an absolute path, unix:///path")
            }
            self.init(transport: .unix(path: path))
            return
        }
        guard url.hasPrefix("redis://") else {
            throw L4LBError(
                .invalidValue,
                "--redis '\(text)': expected redis://[:password@]host[:port][/db] or unix:///path"
            )
        }
        var rest = Substring(url.dropFirst("redis://".count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                username = credentials[..<colon].isEmpty ? nil : String(credentials[..<colon])
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                password = String(credentials)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let databaseText = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !databaseText.isEmpty {
                guard let number = Int(databaseText), number >= 0 else {
                    throw L4LBError(.invalidValue, "--redis '\(text)': database '\(databaseText)' is not a number")
                }
                database = number
            }
        }
        let hostAndPort: HostAndPort
        if rest.hasSuffix("]") || !rest.contains(":") || (rest.filter { $0 == ":" }.count > 1 && !rest.hasPrefix("[")) {
            // No port given: Redis's default.
            let host = rest.hasPrefix("[") ? String(rest.dropFirst().dropLast()) : String(rest)
            guard !host.isEmpty else { throw L4LBError(.invalidValue, "--redis '\(text)': the host is empty") }
            hostAndPort = HostAndPort(host: host, port: 6379)
        } else {
            do {
                hostAndPort = try HostAndPort(parsing: rest)
            } catch {
                throw L4LBError(.invalidValue, "--redis '\(text)': \(error.message)")
            }
        }
        self.init(
            transport: .tcp(host: hostAndPort.host, port: hostAndPort.port),
            username: username,
            password: password,
            database: database
        )
    }

    /// The URL without its password, for logs.
    public var description: String {
        let credentials = self.password == nil ? "" : "\(self.username ?? ""):***@"
        switch self.transport {
        case .tcp(let host, let port):
            let address = HostAndPort(host: host, port: port)
            return "redis://\(credentials)\(address)" + (self.database == 0 ? "" : "/\(self.database)")
        case .unix(let path):
            return "unix://\(path)"
        }
    }
}
