import Foundation

/// Finds a key that one JSON object names twice. Parsers disagree on such a document (Foundation's
/// decoder takes the first, Python's json the last), so l4lb refuses it rather than guess which the
/// operator meant. Reads valid JSON only: call it once the document has parsed.
public enum JSONDuplicateKeys {
    /// The first key named twice in one object (decoded, with its escapes resolved), or nil.
    public static func first(in text: String) -> String? {
        let bytes = Array(text.utf8)
        var index = 0
        // One set of keys per open object; nil for an open array.
        var open: [Set<String>?] = []
        var expectingKey = false
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "{"):
                open.append([])
                expectingKey = true
            case UInt8(ascii: "["):
                open.append(nil)
                expectingKey = false
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = open.popLast()
                expectingKey = false
            case UInt8(ascii: ","):
                expectingKey = open.last.map { $0 != nil } ?? false
            case UInt8(ascii: "\""):
                let start = index
                index += 1
                while index < bytes.count, bytes[index] != UInt8(ascii: "\"") {
                    index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
                }
                if expectingKey, var keys = open.last ?? nil {
                    let literal = Data(bytes[start...min(index, bytes.count - 1)])
                    let key =
                        (try? JSONDecoder().decode(String.self, from: literal))
                        ?? String(decoding: literal, as: UTF8.self)
                    if !keys.insert(key).inserted { return key }
                    open[open.count - 1] = keys
                    expectingKey = false
                }
            default:
                break
            }
            index += 1
        }
        return nil
    }
}
