/// Waits, in bounded steps of 20 ms, until `condition` holds; false if `timeoutSeconds` passed
/// first. For conditions that no event announces (a count another thread updates).
func eventually(timeoutSeconds: Double = 5, _ condition: () async -> Bool) async -> Bool {
    let steps = Int(timeoutSeconds / 0.02)
    for _ in 0..<steps {
        if await condition() { return true }
        try? await Task.sleep(nanoseconds: 20_000_000)
    }
    return await condition()
}
