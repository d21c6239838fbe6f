import Foundation
import LBKit

/// The control channels, and the decoding of their payloads into changes.
public enum ControlChannel: String, CaseIterable, Sendable {
    case addServer
    case removeServer
    case setPolicy
    /// Read `serverPool` again (after it was written directly with SET); the payload is ignored.
    case reloadPool
    /// Install a shadow policy beside the active one (asked, never obeyed), or remove it.
    case setShadowPolicy
    case clearShadowPolicy
    /// `l4lb ctl explain`: a JSON request that every instance (or the one it names) answers by
    /// pushing its explanation onto the request's reply list.
    case explain
}

/// A request on the `explain` channel: `{"id": "...", "client": "192.0.2.7", "port": 4000,
/// "instance": "lb-1"}`; `port` and `instance` are optional.
public struct ExplainRequest: Hashable, Sendable {
    /// Names the reply list (`explain:<id>`): letters, digits, '-' and '_', at most 64.
    public var id: String
    public var client: ClientAddress
    /// Only this instance answers; all do when nil.
    public var instance: String?

    private struct Wire: Codable {
        var id: String
        var client: String
        var port: Int?
        var instance: String?
    }

    public init(id: String, client: ClientAddress, instance: String?) {
        self.id = id
        self.client = client
        self.instance = instance
    }

    init(json text: String) throws(L4LBError) {
        guard let wire = try? JSONDecoder().decode(Wire.self, from: Data(text.utf8)) else {
            throw L4LBError(
                .invalidValue,
                "an explain request is {\"id\": ..., \"client\": IP[, \"port\": P][, \"instance\": NAME]}"
            )
        }
        let idAllowed = wire.id.unicodeScalars.allSatisfy {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_")
        }
        guard !wire.id.isEmpty, wire.id.utf8.count <= 64, idAllowed else {
            throw L4LBError(.invalidValue, "explain request id must be 1-64 letters, digits, '-' or '_'")
        }
        guard let port = UInt16(exactly: wire.port ?? 0) else {
            throw L4LBError(.invalidValue, "explain request port must be 0-65535")
        }
        guard let client = ClientAddress(text: wire.client, port: port) else {
            throw L4LBError(.invalidValue, "explain request client '\(wire.client.prefix(64))' is not an IP address")
        }
        self.init(id: wire.id, client: client, instance: wire.instance)
    }

    public var json: String {
        JSONText.encode(
            Wire(id: self.id, client: self.client.addressText, port: Int(self.client.port), instance: self.instance)
        )
    }
}

/// One decoded control message. Decoding checks everything a message can get wrong, so applying it
/// can only fail for reasons outside the message (a host that does not resolve, a policy that
/// refuses its configuration).
public enum ControlMessage: Hashable, Sendable, CustomStringConvertible {
    case addServer(BackendSpec)
    case removeServer(HostAndPort)
    case setPolicy(PolicySpec)
    case reloadPool
    case setShadowPolicy(PolicySpec)
    case clearShadowPolicy
    case explain(ExplainRequest)

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
        case .setShadowPolicy:
            self = .setShadowPolicy(try PolicySpec(parsing: text))
        case .clearShadowPolicy:
            self = .clearShadowPolicy
        case .explain:
            self = .explain(try ExplainRequest(json: text))
        }
    }

    public var description: String {
        switch self {
        case .addServer(let spec): return "addServer \(spec)"
        case .removeServer(let address): return "removeServer \(address)"
        case .setPolicy(let spec): return "setPolicy \(spec)"
        case .reloadPool: return "reloadPool"
        case .setShadowPolicy(let spec): return "setShadowPolicy \(spec)"
        case .clearShadowPolicy: return "clearShadowPolicy"
        case .explain(let request): return "explain \(request.json)"
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
