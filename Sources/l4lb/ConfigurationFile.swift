import Foundation
import LBKit

/// `--config FILE`: every flag of `l4lb run`, one per line, so that a unit file needs no long
/// command line. The file's lines become flags and go through the same parser and checks as the
/// command line, so the two can never disagree about what a setting means.
///
/// ```
/// # /etc/l4lb/l4lb.conf
/// listen 0.0.0.0:80
/// backend 10.0.0.1:80,weight=2
/// backend 10.0.0.2:80
/// policy least-connections
/// accept-proxy-protocol
/// ```
///
/// A flag given on the command line overrides the file: every line of that name is dropped (so
/// `--backend` on the command line replaces the file's backends rather than adding to them).
///
/// apple/swift-configuration was considered: its providers give typed lookups of keys, but l4lb's
/// flags already have one parser with every check and message; mapping lines onto flags keeps a
/// single source of truth.
enum ConfigurationFile {
    struct Line: Equatable {
        var name: String
        var value: String?
    }

    static func read(_ path: String) throws(L4LBError) -> [Line] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw L4LBError(.invalidValue, "--config \(path): cannot read the file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw L4LBError(.invalidValue, "--config \(path): not UTF-8 text")
        }
        return try Self.parse(text, path: path)
    }

    /// The lines of a config file's `text`; `path` names it in errors.
    static func parse(_ text: String, path: String) throws(L4LBError) -> [Line] {
        var lines: [Line] = []
        // Split on the byte, not the Character: in a file written with CRLF endings "\r\n" is one
        // Character, and a Character split would see the whole file as one line.
        for (number, raw) in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .enumerated()
        {
            let line = String(decoding: raw, as: UTF8.self).trimmingCharacters(
                in: .whitespaces.union(.init(charactersIn: "\r"))
            )
            if line.isEmpty || line.hasPrefix("#") { continue }
            let separator = line.firstIndex { $0 == " " || $0 == "\t" || $0 == "=" }
            var name = String(line[..<(separator ?? line.endIndex)])
            if name.hasPrefix("--") { name.removeFirst(2) }
            var value = separator.map { String(line[$0...].dropFirst()).trimmingCharacters(in: .whitespaces) }
            if let text = value, text.hasPrefix("=") {
                value = String(text.dropFirst()).trimmingCharacters(in: .whitespaces)
            }
            if value?.isEmpty == true { value = nil }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
                throw L4LBError(
                    .invalidValue,
                    "--config \(path) line \(number + 1): '\(line.prefix(40))' is not 'option value'"
                )
            }
            guard name != "config" else {
                throw L4LBError(
                    .invalidValue,
                    "--config \(path) line \(number + 1): a config file cannot include another"
                )
            }
            lines.append(Line(name: name, value: value))
        }
        return lines
    }

    /// The file's lines as flags, minus those the command line gives, followed by the command line.
    static func merge(_ lines: [Line], commandLine: [String]) -> [String] {
        let given = Set(
            commandLine.filter { $0.hasPrefix("--") }.map { String($0.dropFirst(2).prefix { $0 != "=" }) }
        )
        var arguments: [String] = []
        for line in lines where !given.contains(line.name) {
            if let value = line.value {
                arguments.append("--\(line.name)=\(value)")
            } else {
                arguments.append("--\(line.name)")
            }
        }
        return arguments + commandLine
    }
}
