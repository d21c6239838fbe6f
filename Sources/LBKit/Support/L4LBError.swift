/// The one error type l4lb reports to operators: a stable `code` to match on and a one-line `message`
/// to print. New codes can be added without breaking callers, because `Code` wraps a private enum.
public struct L4LBError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidAddress
            case invalidBackend
            case invalidDuration
            case invalidValue
            case unknownPolicy
            case invalidPolicyConfiguration
            case resolutionFailed
            case bindFailed
            case invalidPlugin
            case invalidProxyHeader
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        public var description: String { self.base.rawValue }

        /// An address that is not `host:port` or `[ipv6]:port`, or a port out of range.
        public static let invalidAddress = Code(.invalidAddress)
        /// A backend specification with a bad attribute (`weight`, `region`).
        public static let invalidBackend = Code(.invalidBackend)
        /// A duration that is negative or not a number with an optional `ms`, `s`, `m` or `h` unit.
        public static let invalidDuration = Code(.invalidDuration)
        /// Any other flag value that is out of range.
        public static let invalidValue = Code(.invalidValue)
        /// A policy name that no built-in policy or plugin declares.
        public static let unknownPolicy = Code(.unknownPolicy)
        /// A policy configuration that is not a JSON object, or that the policy refuses.
        public static let invalidPolicyConfiguration = Code(.invalidPolicyConfiguration)
        /// A host name that did not resolve.
        public static let resolutionFailed = Code(.resolutionFailed)
        /// A listen address that could not be bound.
        public static let bindFailed = Code(.bindFailed)
        /// A plugin file that is not a loadable, well-formed l4lb policy plugin, or that is unsafe.
        public static let invalidPlugin = Code(.invalidPlugin)
        /// A PROXY protocol header that is malformed.
        public static let invalidProxyHeader = Code(.invalidProxyHeader)
    }

    public let code: Code
    public let message: String

    /// - Parameter message: one line for the operator. Control characters in it (from an echoed
    ///   input: a config line with a carriage return, a payload with a NUL) are written as escapes,
    ///   so that every error stays one line whatever input it quotes.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = ControlCharacters.escaped(message)
    }

    public var description: String { self.message }
}
