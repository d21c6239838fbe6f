import NIOCore

/// Turns backend specs into connectable addresses. Runs on the control path whenever the pool
/// changes, so that the data plane connects to an already-resolved address and never waits on DNS.
public enum BackendResolver {
    /// Resolves an IP literal without touching the resolver, a name with a blocking lookup.
    public static func resolve(_ address: HostAndPort) throws(L4LBError) -> SocketAddress {
        if let literal = try? SocketAddress(ipAddress: address.host, port: address.port) {
            return literal
        }
        do {
            return try SocketAddress.makeAddressResolvingHost(address.host, port: address.port)
        } catch {
            throw L4LBError(.resolutionFailed, "cannot resolve '\(address.host)' for backend \(address): \(error)")
        }
    }

    /// A listen address: `*` means every IPv4 address (0.0.0.0), for `--listen` and `--admin` alike;
    /// `[::]:P` listens on IPv6 (and IPv4, where the system maps it).
    public static func resolveListen(_ address: HostAndPort) throws(L4LBError) -> SocketAddress {
        let host = address.host == "*" ? "0.0.0.0" : address.host
        return try Self.resolve(HostAndPort(host: host, port: address.port))
    }
}
