import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// l4lb's own listening addresses, which no backend may be: a backend that is one of them sends each
/// client straight back to l4lb, which picks it again, until descriptors run out (each turn of the
/// loop holds two). One `addServer` of the wrong port would take the balancer down.
public struct OwnListeners: Sendable {
    private let addresses: [SocketAddress]
    /// The machine's own IP addresses, read once here (not once per backend of a large pool), and
    /// only when a wildcard listener makes them matter.
    private let localIPs: Set<String>

    public init(_ addresses: [SocketAddress]) {
        // Port 0 ("any port") cannot match a backend; the bound port replaces it once known.
        self.addresses = addresses.filter { ($0.port ?? 0) != 0 }
        let wildcard = self.addresses.contains { $0.ipAddress == "0.0.0.0" || $0.ipAddress == "::" }
        let devices = wildcard ? ((try? System.enumerateDevices()) ?? []) : []
        self.localIPs = Set(devices.compactMap { $0.address?.ipAddress })
    }

    public static let none = OwnListeners([])

    /// The listen address that `backend` would loop into, if any.
    public func clash(with backend: SocketAddress) -> SocketAddress? {
        self.addresses.first { self.loops(backend, into: $0) }
    }

    /// Throws the one-line refusal if `backend` (named `name` in the error) is one of these addresses.
    public func check(_ backend: SocketAddress, name: HostAndPort) throws(L4LBError) {
        guard let listener = self.clash(with: backend) else { return }
        throw L4LBError(
            .invalidBackend,
            "backend \(name) is l4lb's own listen address \(Describe.address(listener)): every client would loop back into l4lb"
        )
    }

    private func loops(_ backend: SocketAddress, into listener: SocketAddress) -> Bool {
        guard let port = listener.port, port != 0, backend.port == port,
            let backendIP = backend.ipAddress, let listenerIP = listener.ipAddress
        else { return false }
        if backendIP == listenerIP { return true }
        // A wildcard listener is reached at every local address.
        guard listenerIP == "0.0.0.0" || listenerIP == "::" else { return false }
        return backendIP.hasPrefix("127.") || backendIP == "::1" || backendIP == "0.0.0.0" || backendIP == "::"
            || self.localIPs.contains(backendIP)
    }
}
