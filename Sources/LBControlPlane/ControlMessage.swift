import LBKit

/// The control channels, and the decoding of their payloads into changes.
public enum ControlChannel: String, CaseIterable, Sendable {
    case addServer
    case removeServer
    case setPolicy
    /// Read `serverPool` again (after it was written directly with SET); the payload is ignored.
    case reloadPool
}

/// One decoded control message. Decoding checks everything a message can get wrong, so applying it
/// can only fail for reasons outside the message (a host that does not resolve, a policy that
/// refuses its configuration).
public enum ControlMessage: Hashable, Sendable, CustomStringConvertible {
    case addServer(BackendSpec)
    case removeServer(HostAndPort)
    case setPolicy(PolicySpec)
    case reloadPool

    /// Payloads longer than this are refused unread: a control message is one line.
    public static let maximumPayloadLength = 64 * 1024

    public init(channel: ControlChannel, payload: String) throws(L4LBError) {
        guard payload.utf8.count <= Self.maximumPayloadLength else {
            throw L4LBError(
                .invalidValue,
                "payload is \(payload.utf8.count) bytes, more than the \(Self.maximumPayloadLength) allowed"
            )
        }
        let text = payload.trimmingASCIIWhitespace()
        switch channel {
        case .addServer:
            self = .addServer(
                text.hasPrefix("{") ? try PoolDocument.decodeEntryObject(text) : try BackendSpec(parsing: text)
            )
        case .removeServer:
            let spec = text.hasPrefix("{") ? try PoolDocument.decodeEntryObject(text) : try BackendSpec(parsing: text)
            self = .removeServer(spec.address)
        case .setPolicy:
            self = .setPolicy(try PolicySpec(parsing: text))
        case .reloadPool:
            self = .reloadPool
        }
    }

    public var description: String {
        switch self {
        case .addServer(let spec): return "addServer \(spec)"
        case .removeServer(let address): return "removeServer \(address)"
        case .setPolicy(let spec): return "setPolicy \(spec)"
        case .reloadPool: return "reloadPool"
        }
    }

    /// The pool after this message, or nil when it leaves `pool` as it is (an add of a backend
    /// already there with the same attributes, a remove of one that is absent, a policy change).
    /// An add of a present backend with other attributes updates it in place.
    public func applied(to pool: [BackendSpec]) -> [BackendSpec]? {
        var editor = PoolEditor(pool)
        return editor.apply(self) == nil ? nil : editor.specs
    }

}
