/// A strict parser of the Prometheus text exposition format (version 0.0.4), so that tests read
/// /metrics the way a Prometheus server would, and fail on anything it would reject.
struct PrometheusText {
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    private(set) var types: [String: String] = [:]
    private(set) var samples: [Sample] = []

    init(_ text: String) throws {
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            if line.hasPrefix("# HELP ") { continue }
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3])
                else {
                    throw TestFailure("line \(number + 1): bad TYPE line '\(line)'")
                }
                guard self.types[String(parts[2])] == nil else {
                    throw TestFailure("line \(number + 1): second TYPE for \(parts[2])")
                }
                self.types[String(parts[2])] = String(parts[3])
                continue
            }
            if line.hasPrefix("#") { continue }
            self.samples.append(try Self.sample(String(line), number: number + 1))
        }
        for sample in self.samples {
            let family = sample.name.hasSuffix("_total") ? sample.name : sample.name
            guard self.types[family] != nil || self.types[String(family.dropLast(6))] != nil else {
                throw TestFailure("sample \(sample.name) has no TYPE line")
            }
        }
    }

    private static func sample(_ line: String, number: Int) throws -> Sample {
        var rest = Substring(line)
        let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }
        guard let first = name.first, first.isLetter || first == "_" || first == ":" else {
            throw TestFailure("line \(number): bad metric name in '\(line)'")
        }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.hasPrefix("{") {
            rest = rest.dropFirst()
            while !rest.hasPrefix("}") {
                let key = rest.prefix { $0 != "=" }
                rest = rest.dropFirst(key.count)
                guard rest.hasPrefix("=\"") else {
                    throw TestFailure("line \(number): bad label in '\(line)'")
                }
                rest = rest.dropFirst(2)
                var value = ""
                while let character = rest.first, character != "\"" {
                    if character == "\\" {
                        rest = rest.dropFirst()
                        guard let escaped = rest.first else { break }
                        value.append(escaped == "n" ? "\n" : escaped)
                    } else {
                        value.append(character)
                    }
                    rest = rest.dropFirst()
                }
                guard rest.hasPrefix("\"") else {
                    throw TestFailure("line \(number): unterminated label value")
                }
                rest = rest.dropFirst()
                labels[String(key)] = value
                if rest.hasPrefix(",") { rest = rest.dropFirst() }
                guard !rest.isEmpty else { throw TestFailure("line \(number): unterminated labels") }
            }
            rest = rest.dropFirst()
        }
        guard rest.hasPrefix(" "), let value = Double(rest.dropFirst().split(separator: " ").first ?? "") else {
            throw TestFailure("line \(number): bad value in '\(line)'")
        }
        return Sample(name: String(name), labels: labels, value: value)
    }

    /// The value of the sample `name` with exactly `labels`, if present.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        self.samples.first { $0.name == name && $0.labels == labels }?.value
    }
}

/// A one-request HTTP/1.0 GET over a blocking socket; returns status code and body.
func httpGet(port: Int, path: String) throws -> (status: Int, body: String) {
    let client = try BlockingClient(port: port)
    try client.send("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    let response = String(decoding: try client.readToEnd(), as: UTF8.self)
    guard let headerEnd = response.range(of: "\r\n\r\n"),
        let status = Int(response.split(separator: " ").dropFirst().first ?? "")
    else {
        throw TestFailure("not an HTTP response: \(response.prefix(80))")
    }
    return (status, String(response[headerEnd.upperBound...]))
}
