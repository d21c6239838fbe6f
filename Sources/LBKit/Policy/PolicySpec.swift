import Foundation

/// A policy as an operator names it: `NAME` or `NAME {json}`, the grammar shared by `--policy` and
/// the control plane, so that whatever works on the command line works over Redis too.
public struct PolicySpec: Hashable, Sendable, CustomStringConvertible {
    /// Longer configurations are refused: a policy spec is a line of text, not a data file.
    public static let maximumLength = 64 * 1024

    public let name: String
    /// The JSON configuration object exactly as written, or nil when there is none.
    public let configuration: String?

    public init(name: String, configuration: String? = nil) {
        self.name = name
        self.configuration = configuration
    }

    public init(parsing text: String) throws(L4LBError) {
        guard text.utf8.count <= Self.maximumLength else {
            throw L4LBError(
                .invalidPolicyConfiguration,
                "policy spec is \(text.utf8.count) bytes, more than the \(Self.maximumLength) allowed"
            )
        }
        let trimmed = text.trimmingASCIIWhitespace()
        let nameEnd = trimmed.firstIndex { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "{" } ?? trimmed.endIndex
        let name = String(trimmed[..<nameEnd])
        guard !name.isEmpty else {
            throw L4LBError(
                .unknownPolicy,
                "empty policy spec: expected a policy name, optionally followed by a JSON object"
            )
        }
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
            throw L4LBError(.unknownPolicy, "invalid policy name '\(name)'")
        }
        let rest = String(trimmed[nameEnd...]).trimmingASCIIWhitespace()
        if rest.isEmpty {
            self.init(name: name)
            return
        }
        guard rest.hasPrefix("{") else {
            throw L4LBError(
                .invalidPolicyConfiguration,
                "policy '\(name)': the configuration must be a JSON object, got '\(rest.prefix(40))'"
            )
        }
        _ = try Self.decodeObject(rest, policy: name)
        self.init(name: name, configuration: rest)
    }

    /// The configuration as a JSON object; empty when there is none.
    public func configurationObject() throws(L4LBError) -> [String: Any] {
        guard let configuration else { return [:] }
        return try Self.decodeObject(configuration, policy: self.name)
    }

    private static func decodeObject(_ text: String, policy: String) throws(L4LBError) -> [String: Any] {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [])
        } catch {
            throw L4LBError(.invalidPolicyConfiguration, "policy '\(policy)': the configuration is not valid JSON")
        }
        guard let dictionary = object as? [String: Any] else {
            throw L4LBError(.invalidPolicyConfiguration, "policy '\(policy)': the configuration must be a JSON object")
        }
        return dictionary
    }

    public var description: String {
        if let configuration { return "\(self.name) \(configuration)" }
        return self.name
    }
}
