import Foundation
import LBKit

/// The JSON form of the pool kept in the `serverPool` key: an array whose entries are `"host:port"`
/// or `{"address": "host:port", "weight": 2, "region": "EU"}`. Unknown object keys are ignored, so
/// other tools may annotate entries; wrong types are refused.
public enum PoolDocument {
    /// The largest `serverPool` value accepted.
    public static let maximumLength = 1 << 20

    public static func decode(_ text: String) throws(L4LBError) -> [BackendSpec] {
        guard text.utf8.count <= Self.maximumLength else {
            throw L4LBError(.invalidBackend, "serverPool is \(text.utf8.count) bytes, more than \(Self.maximumLength)")
        }
        let entries: [Entry]
        do {
            entries = try JSONDecoder().decode([Entry].self, from: Data(text.utf8))
        } catch let error as DecodingError {
            throw L4LBError(.invalidBackend, "serverPool is not a JSON array of backends: \(Self.describe(error))")
        } catch {
            throw L4LBError(.invalidBackend, "serverPool is not valid JSON")
        }
        if let key = JSONDuplicateKeys.first(in: text) {
            throw L4LBError(.invalidBackend, "serverPool names '\(key.prefix(64))' twice in one entry")
        }
        var specs: [BackendSpec] = []
        for (index, entry) in entries.enumerated() {
            do {
                let spec = try entry.spec()
                if !specs.contains(where: { $0.address == spec.address }) { specs.append(spec) }
            } catch {
                throw L4LBError(error.code, "serverPool entry \(index): \(error.message)")
            }
        }
        return specs
    }

    /// One entry, as the `addServer` payload's object form: `{"address": ..., "weight": ..., "region": ...}`.
    public static func decodeEntryObject(_ text: String) throws(L4LBError) -> BackendSpec {
        do {
            let spec = try JSONDecoder().decode(ObjectEntry.self, from: Data(text.utf8)).spec()
            if let key = JSONDuplicateKeys.first(in: text) {
                throw L4LBError(.invalidBackend, "'\(key.prefix(64))' is given twice")
            }
            return spec
        } catch let error as L4LBError {
            throw error
        } catch let error as DecodingError {
            throw L4LBError(.invalidBackend, "not a backend object: \(Self.describe(error))")
        } catch {
            throw L4LBError(.invalidBackend, "not valid JSON")
        }
    }

    /// The pool as `serverPool` holds it: plain strings where weight and region are defaults.
    public static func encode(_ specs: [BackendSpec]) -> String {
        JSONText.encode(specs.map(Entry.init))
    }

    /// One entry as JSON.
    public static func encodeEntry(_ spec: BackendSpec) -> String {
        JSONText.encode(Entry(spec))
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let components = context.codingPath.map { key in key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)" }
            return components.isEmpty ? "the document" : components.joined()
        }
        switch error {
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "\(path(context)) has the wrong type"
        case .keyNotFound(let key, let context):
            return "\(path(context)) lacks \"\(key.stringValue)\""
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON" : "\(path(context)) is malformed"
        @unknown default:
            return "malformed"
        }
    }

    /// One entry of the document: `"host:port"`, or an object when weight or region is set.
    private enum Entry: Codable {
        case text(String)
        case object(ObjectEntry)

        init(_ spec: BackendSpec) {
            if spec.weight == 1 && spec.region == nil {
                self = .text(spec.address.description)
            } else {
                self = .object(
                    ObjectEntry(
                        address: spec.address.description,
                        weight: spec.weight == 1 ? nil : spec.weight,
                        region: spec.region
                    )
                )
            }
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .text(let text): try container.encode(text)
            case .object(let object): try container.encode(object)
            }
        }

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self) {
                self = .text(text)
            } else {
                self = .object(try container.decode(ObjectEntry.self))
            }
        }

        func spec() throws(L4LBError) -> BackendSpec {
            switch self {
            case .text(let text): return try BackendSpec(parsing: text)
            case .object(let object): return try object.spec()
            }
        }
    }

    private struct ObjectEntry: Codable {
        var address: String
        var weight: Int?
        var region: String?

        func spec() throws(L4LBError) -> BackendSpec {
            var spec = BackendSpec(address: try HostAndPort(parsing: self.address))
            if let weight = self.weight {
                spec.weight = try BackendSpec.validatedWeight(weight, text: "\(weight)", backend: self.address)
            }
            if let region = self.region {
                guard !region.isEmpty else {
                    throw L4LBError(.invalidBackend, "backend \(self.address): region is empty")
                }
                spec.region = region
            }
            return spec
        }
    }
}
