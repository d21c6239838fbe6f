import Foundation

/// Codable values as one line of JSON text with sorted keys: the status key, `/status`, the access
/// log and JSON log lines all write their JSON here.
public enum JSONText {
    public static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every type written here encodes plain strings and numbers, which cannot fail to encode.
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
