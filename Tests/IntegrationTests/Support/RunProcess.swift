import Foundation

/// Runs `executable` with `arguments` (in the repository's root) to its end; its exit status and
/// everything it printed, standard output and error together. Waits off the cooperative threads.
func runProcess(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await offThePool { try runProcessBlocking(executable, arguments) }
}

private func runProcessBlocking(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = PluginFixtures.repositoryRoot
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
