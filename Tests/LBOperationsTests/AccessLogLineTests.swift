import Foundation
import LBKit
import LBOperations
import Testing

@Suite("Access-log lines")
struct AccessLogLineTests {
    static let time = Date(timeIntervalSince1970: 1_700_000_000.25)
    static let record = ConnectionRecord(
        client: ClientAddress(family: .ipv4, bytes: [192, 0, 2, 7], port: 40_000),
        backend: HostAndPort(host: "10.0.0.1", port: 80),
        bytesFromClient: 10,
        bytesFromBackend: 2000,
        duration: .microseconds(1234),
        reason: .clientClosed,
        retries: 1
    )

    @Test("logfmt: every field, in the documented order")
    func logfmt() {
        #expect(
            AccessLog.line(Self.record, closedAt: Self.time, format: .logfmt)
                == "time=2023-11-14T22:13:20.250Z client=192.0.2.7:40000 backend=10.0.0.1:80 bytes_from_client=10 "
                + "bytes_from_backend=2000 duration_ms=1.234 reason=client-closed retries=1\n"
        )
    }

    @Test("json: one object per line with the same fields; no backend is \"-\"")
    func json() throws {
        var record = Self.record
        record.backend = nil
        record.reason = .noBackend
        let line = AccessLog.line(record, closedAt: Self.time, format: .json)
        #expect(line.hasSuffix("}\n") && line.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["backend"] as? String == "-")
        #expect(object["client"] as? String == "192.0.2.7:40000")
        #expect(object["reason"] as? String == "no-backend")
        #expect(object["bytes_from_backend"] as? Int == 2000)
        #expect((object["duration_ms"] as? Double).map { abs($0 - 1.234) < 1e-9 } == true)
        #expect(object["time"] as? String == "2023-11-14T22:13:20.250Z")
    }
}
