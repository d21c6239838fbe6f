/// Writing control characters as escapes, so that text quoted from outside (a payload, a config
/// line) can neither break a line nor forge one: in error messages and in the log.
public enum ControlCharacters {
    /// `text` with C0 and C1 controls, DEL and the Unicode line and paragraph separators written as
    /// `\n`, `\r`, `\t` or `\u{1b}`. With `doublingBackslashes`, a backslash is written `\\`, so that
    /// an escape cannot be told apart from text that looks like one (the log's format).
    public static func escaped(_ text: String, doublingBackslashes: Bool = false) -> String {
        let needsWork = text.unicodeScalars.contains { Self.breaksLines($0) || (doublingBackslashes && $0 == "\\") }
        guard needsWork else { return text }
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\\" where doublingBackslashes: result += "\\\\"
            case _ where Self.breaksLines(scalar): result += "\\u{\(String(scalar.value, radix: 16))}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
    static func breaksLines(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }
}
