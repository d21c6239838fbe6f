import Foundation

/// A load-balancing policy written in Swift, loaded by l4lb as a plugin.
///
/// Conform a final class to it and export it from the library with one line:
///
/// ```swift
/// @_cdecl("l4lb_policy_entry")
/// public func entry(_ d: UnsafeMutableRawPointer?, _ size: Int) -> Int32 { exportPolicy(MyPolicy.self, d, size) }
/// ```
///
/// The SDK fills the C descriptor (l4lb_policy.h), keeps the name as a C string, turns addresses and
/// the pool into Swift values without copying them, and routes `PluginLog` into l4lb's log.
///
/// Threads, the ABI's contract: `init`, `poolChanged` and `deinit` run on l4lb's control thread,
/// never concurrently with each other. `pick`, `explain`, `connectionOpened` and `connectionClosed`
/// run concurrently on every relay thread, also while `poolChanged` runs, so they must be
/// thread-safe (atomics, or state swapped whole) and must not block: the calling thread is relaying
/// other clients' bytes.
public protocol PolicyPlugin: AnyObject, Sendable {
    /// The name operators use in `--policy` and `setPolicy`: letters, digits, '.', '_' and '-'.
    static var name: String { get }

    /// Creates an instance from the operator's configuration, the JSON text after the policy name
    /// (empty when there is none). Throw `PluginError` to refuse it: its message reaches the operator.
    /// Control thread; may block (open files).
    init(configuration: String) throws(PluginError)

    /// The index in `backends` of the backend for `client`, which must be one whose `isHealthy` is
    /// true, or nil for none. Any other answer is a fault that l4lb counts, and that client is served
    /// by round-robin.
    func pick(client: PluginAddress, backends: PluginBackends) -> Int?

    /// What `pick` would answer now, and why, in short steps; must change nothing (do not advance a
    /// rotation). For operators: off the hot path, may allocate. By default: no explanation.
    func explain(client: PluginAddress, backends: PluginBackends) -> PluginExplanation

    /// The pool changed; called before any pick sees the new pool, so tables can be rebuilt here.
    func poolChanged(_ backends: PluginBackends)

    /// Whether l4lb should call `connectionOpened` and `connectionClosed`: false by default, because
    /// each call costs every connection two calls into the plugin.
    static var wantsConnectionEvents: Bool { get }

    /// A connection to `backend` opened, or closed. Relay threads; must not block.
    func connectionOpened(_ backend: PluginBackend)
    func connectionClosed(_ backend: PluginBackend)
}

extension PolicyPlugin {
    public func explain(client: PluginAddress, backends: PluginBackends) -> PluginExplanation {
        PluginExplanation(steps: ["\(Self.name) does not explain its picks"], backend: nil)
    }

    public static var wantsConnectionEvents: Bool { false }
    public func poolChanged(_ backends: PluginBackends) {}
    public func connectionOpened(_ backend: PluginBackend) {}
    public func connectionClosed(_ backend: PluginBackend) {}
}

/// Why a plugin refused its configuration: one line for the operator.
public struct PluginError: Error, Sendable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }
}

/// A pick, explained: the steps that lead to it (`"country FR"`, `"region eu-west: 2 healthy of 3"`)
/// and the index of the backend it picks, or nil.
public struct PluginExplanation: Sendable, Equatable {
    public var steps: [String]
    public var backend: Int?

    public init(steps: [String], backend: Int?) {
        self.steps = steps
        self.backend = backend
    }
}

extension PluginError {
    /// The operator's configuration decoded as `type`, or a one-line error naming what is wrong:
    /// `init(configuration:)`'s usual first line. An empty configuration decodes as `{}`.
    public static func decode<Configuration: Decodable>(
        _ type: Configuration.Type,
        from configuration: String
    ) throws(PluginError) -> Configuration {
        let text = configuration.allSatisfy(\.isWhitespace) ? "{}" : configuration
        do {
            return try JSONDecoder().decode(type, from: Data(text.utf8))
        } catch DecodingError.keyNotFound(let key, _) {
            throw PluginError("the configuration needs \"\(key.stringValue)\"")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw PluginError("\"\(path)\" has the wrong type: \(context.debugDescription)")
        } catch {
            throw PluginError("the configuration is not a valid JSON object")
        }
    }
}
