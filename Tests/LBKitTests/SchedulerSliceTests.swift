import Testing

@testable import LBKit

/// `--relay-slice`: a duration the kernel will take as a custom slice, or 0 for its own.
@Suite("Relay scheduler slices")
struct SchedulerSliceTests {
    @Test(
        "durations in 100us-100ms parse to nanoseconds and print as written",
        arguments: [
            ("100us", UInt64(100_000), "100us"), ("300us", 300_000, "300us"), ("2ms", 2_000_000, "2ms"),
            ("0.1s", 100_000_000, "100ms"),
        ]
    )
    func parses(text: String, nanoseconds: UInt64, printed: String) throws {
        let slice = try #require(try SchedulerSlice.parse(text))
        #expect(slice.nanoseconds == nanoseconds)
        #expect(slice.description == printed)
        #expect(try SchedulerSlice.parse(slice.description) == slice)
    }

    @Test("0 keeps the kernel's slice")
    func zeroIsTheKernels() throws {
        #expect(try SchedulerSlice.parse("0") == nil)
        #expect(try SchedulerSlice.parse("0ms") == nil)
    }

    @Test("the default is the one the flag's help shows")
    func standard() throws {
        #expect(try SchedulerSlice.parse(SchedulerSlice.standard.description) == .standard)
        #expect(ProxyConfiguration(listen: []).relaySlice == .standard)
    }

    @Test(
        "outside the kernel's range, or not a duration, is one line naming the flag",
        arguments: [
            ("99us", "out of range"), ("101ms", "out of range"), ("1s", "out of range"), ("-1ms", "not a duration"),
            ("soon", "not a duration"), ("", "not a duration"), ("1e30h", "not a duration"),
        ]
    )
    func refuses(text: String, why: String) {
        #expect {
            try SchedulerSlice.parse(text)
        } throws: { error in
            guard let error = error as? L4LBError else { return false }
            return error.message.hasPrefix("--relay-slice: '\(text)' ") && error.message.contains(why)
                && !error.message.contains("\n")
        }
    }
}
