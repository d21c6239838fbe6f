/// A `host:port` or `[ipv6]:port` pair as an operator writes it.
///
/// The text form is the backend's identity everywhere (flags, the Redis pool, logs), so `description`
/// gives back the canonical spelling: brackets around IPv6 hosts, nothing else added.
public struct HostAndPort: Hashable, Sendable, CustomStringConvertible {
    /// The host without brackets: an IPv4 or IPv6 literal or a DNS name.
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[ipv6]:port`.
    /// - Parameter allowPortZero: listeners may ask for port 0 (the kernel picks one); backends may not.
    public init(parsing text: some StringProtocol, allowPortZero: Bool = false) throws(L4LBError) {
        let text = String(text).trimmingASCIIWhitespace()
        guard !text.isEmpty else {
            throw L4LBError(.invalidAddress, "empty address: expected host:port or [ipv6]:port")
        }
        // A NUL would cut the name short in the resolver (127.0.0.1\0evil:80 would become
        // 127.0.0.1:80), and other control characters have no place in an address.
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw L4LBError(.invalidAddress, "invalid address: it contains control characters")
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw L4LBError(.invalidAddress, "invalid address '\(text)': missing ']' after the IPv6 address")
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw L4LBError(.invalidAddress, "invalid address '\(text)': expected ':port' after ']'")
            }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw L4LBError(.invalidAddress, "invalid address '\(text)': expected host:port")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                throw L4LBError(
                    .invalidAddress,
                    "invalid address '\(text)': write IPv6 addresses in brackets, as [\(host)]:\(portText)"
                )
            }
        }
        guard !host.isEmpty else {
            throw L4LBError(.invalidAddress, "invalid address '\(text)': the host is empty")
        }
        guard portText.allSatisfy(\.isASCIIDigit), let port = Int(portText), port >= (allowPortZero ? 0 : 1),
            port <= 65_535
        else {
            let range = allowPortZero ? "0-65535" : "1-65535"
            throw L4LBError(.invalidAddress, "invalid address '\(text)': port '\(portText)' is not in \(range)")
        }
        self.host = String(host)
        self.port = port
    }

    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}

extension String {
    public func trimmingASCIIWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = self.firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = self.lastIndex(where: { !isSpace($0) })!
        return String(self[first...last])
    }
}
