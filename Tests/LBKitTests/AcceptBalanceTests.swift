import Testing

@testable import LBKit

/// When a relay thread hands a client it accepted to a less-loaded one.
@Suite("Accept balance")
struct AcceptBalanceTests {
    @Test(
        "a client is handed over only when the least-loaded thread serves clearly fewer",
        arguments: [
            (0, 0, false), (1, 0, false), (2, 0, true), (3, 2, false), (4, 2, true),
            // Once loads are large the gap must also be an eighth of the smaller one.
            (10, 8, false), (11, 8, true), (102, 90, false), (103, 90, true),
            // Never toward a thread that serves more.
            (5, 9, false),
        ]
    )
    func handsOver(own: Int, least: Int, expected: Bool) {
        #expect(AcceptBalance.handsOver(own: own, least: least) == expected)
    }
}
