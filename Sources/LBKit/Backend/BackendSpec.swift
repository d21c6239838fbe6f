/// What an operator says about one backend: where it is and its attributes.
///
/// Written as `host:port[,weight=N][,region=NAME]` on the command line; the control plane reads the
/// same fields from JSON (`PoolDocument`). Two specs with the same `address` are the same backend.
public struct BackendSpec: Hashable, Sendable, CustomStringConvertible {
    /// Weights are bounded so that schedules built from them stay small (HAProxy allows 0-256).
    public static let weightRange = 1...256

    public var address: HostAndPort
    public var weight: Int
    /// A free-form label that region-aware policies match against (for example a country or continent code).
    public var region: String?

    public init(address: HostAndPort, weight: Int = 1, region: String? = nil) {
        self.address = address
        self.weight = weight
        self.region = region
    }

    /// Parses `host:port[,weight=N][,region=NAME]`.
    public init(parsing text: String) throws(L4LBError) {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        self.address = try HostAndPort(parsing: parts[0])
        self.weight = 1
        self.region = nil
        var seen: Set<String> = []
        for attribute in parts.dropFirst() {
            let pair = attribute.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(pair[0]).trimmingASCIIWhitespace()
            let value = pair.count == 2 ? String(pair[1]).trimmingASCIIWhitespace() : ""
            guard seen.insert(key).inserted else {
                // Which one was meant is a guess; other readers of the same text may guess otherwise.
                throw L4LBError(.invalidBackend, "invalid backend '\(text)': '\(key)' is given twice")
            }
            switch key {
            case "weight":
                self.weight = try Self.validatedWeight(Int(value), text: value, backend: text)
            case "region":
                guard !value.isEmpty else {
                    throw L4LBError(.invalidBackend, "invalid backend '\(text)': region is empty")
                }
                self.region = value
            default:
                throw L4LBError(
                    .invalidBackend,
                    "invalid backend '\(text)': unknown attribute '\(key)' (known: weight, region)"
                )
            }
        }
    }

    public static func validatedWeight(_ weight: Int?, text: String, backend: String) throws(L4LBError) -> Int {
        guard let weight, Self.weightRange.contains(weight) else {
            throw L4LBError(
                .invalidBackend,
                "invalid backend '\(backend)': weight '\(text)' is not a whole number in \(Self.weightRange.lowerBound)-\(Self.weightRange.upperBound)"
            )
        }
        return weight
    }

    public var description: String {
        var text = self.address.description
        if self.weight != 1 { text += ",weight=\(self.weight)" }
        if let region = self.region { text += ",region=\(region)" }
        return text
    }
}
