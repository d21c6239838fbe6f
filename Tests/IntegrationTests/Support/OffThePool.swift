import Foundation

/// Runs `work`, which blocks (a child process to its end, a compiler), on a thread of its own, and
/// awaits its result without holding one of Swift's cooperative threads.
///
/// There are only as many of those as cores (two here), and every test shares them: a test that
/// blocks one for a minute (`swift build` of an outside package) and another that blocks the second
/// stall every other test meanwhile. A test stalled like that between two steps can outlive a timer
/// of the l4lb it drives (a drain, an upgrade window) and fail for nothing.
func offThePool<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try work() }) }
        thread.name = "l4lb-test-blocking"
        thread.start()
    }
}
