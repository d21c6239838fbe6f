import Testing

@testable import LBOperations

/// Outside bytes in what operators read: log lines and metric labels cannot be forged.
@Suite("Escaping")
struct EscapingTests {
    @Test("log values are escaped in the text format: no newline, no terminal escape survives")
    func logEscaping() {
        #expect(LineLogHandler.escaped("a\nb\r\tc\u{1b}[31m\\") == "a\\nb\\r\\tc\\u{1b}[31m\\\\")
        #expect(LineLogHandler.escaped("plain text") == "plain text")
    }

    @Test("Prometheus label values are escaped")
    func prometheusEscaping() {
        var text = PrometheusText()
        text.add("m", type: "gauge", help: "h", labels: [("backend", "a\"b\\c\nd")], value: "1")
        #expect(
            String(decoding: text.rendered(), as: UTF8.self)
                == "# HELP m h\n# TYPE m gauge\nm{backend=\"a\\\"b\\\\c\\nd\"} 1\n"
        )
    }
}
