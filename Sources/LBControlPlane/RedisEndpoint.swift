import LBKit

/// Where the control plane's Redis is: `redis://[[user]:password@]host[:port][/db]`,
/// `unix:///path/to/redis.sock`, or the sentinels that know the master,
/// `redis+sentinel://[[user]:password@]host[:port],host[:port]/MASTER[/db]`.
public struct RedisEndpoint: Hashable, Sendable, CustomStringConvertible {
    public enum Transport: Hashable, Sendable {
        case tcp(host: String, port: Int)
        case unix(path: String)
        /// Redis Sentinel: ask these sentinels which server is master `master` now.
        case sentinel(sentinels: [HostAndPort], master: String)
    }

    /// The port sentinels listen on unless told otherwise.
    public static let defaultSentinelPort = 26_379

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
        let isSentinel = url.hasPrefix("redis+sentinel://")
        guard url.hasPrefix("redis://") || isSentinel else {
            throw L4LBError(
                .invalidValue,
                "--redis '\(text)': expected redis://[:password@]host[:port][/db], "
                    + "redis+sentinel://[:password@]host[:port],.../master[/db] or unix:///path"
            )
        }
        var rest = Substring(url.dropFirst(isSentinel ? "redis+sentinel://".count : "redis://".count))
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
        if isSentinel {
            try self.init(sentinelPart: rest, username: username, password: password, text: text)
            return
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

    /// `host[:port],host[:port]/MASTER[/db]`, after `redis+sentinel://` and the credentials.
    private init(sentinelPart rest: Substring, username: String?, password: String?, text: String) throws(L4LBError) {
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3, !parts[1].isEmpty else {
            throw L4LBError(
                .invalidValue,
                "--redis '\(text)': a sentinel URL names the master: redis+sentinel://host:26379,.../mymaster[/db]"
            )
        }
        var sentinels: [HostAndPort] = []
        for item in parts[0].split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw L4LBError(.invalidValue, "--redis '\(text)': an empty sentinel address") }
            let hasPort = item.hasPrefix("[") ? item.contains("]:") : item.contains(":")
            do {
                let address = try HostAndPort(parsing: hasPort ? String(item) : "\(item):\(Self.defaultSentinelPort)")
                sentinels.append(address)
            } catch {
                throw L4LBError(.invalidValue, "--redis '\(text)': sentinel \(item): \(error.message)")
            }
        }
        let master = String(parts[1])
        guard master.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw L4LBError(
                .invalidValue,
                "--redis '\(text)': master name '\(master)' has characters Sentinel does not use"
            )
        }
        var database = 0
        if parts.count == 3, !parts[2].isEmpty {
            guard let number = Int(parts[2]), number >= 0 else {
                throw L4LBError(.invalidValue, "--redis '\(text)': database '\(parts[2])' is not a number")
            }
            database = number
        }
        self.init(
            transport: .sentinel(sentinels: sentinels, master: master),
            username: username,
            password: password,
            database: database
        )
    }

    /// This endpoint with the master's address in place of the sentinels.
    func master(at address: HostAndPort) -> RedisEndpoint {
        RedisEndpoint(
            transport: .tcp(host: address.host, port: address.port),
            username: self.username,
            password: self.password,
            database: self.database
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
        case .sentinel(let sentinels, let master):
            return "redis+sentinel://\(credentials)\(sentinels.map(\.description).joined(separator: ","))/\(master)"
                + (self.database == 0 ? "" : "/\(self.database)")
        }
    }
}
