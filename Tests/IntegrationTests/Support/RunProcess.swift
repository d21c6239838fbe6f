import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs `executable` with `arguments` (in the repository's root) to its end; its exit status and
/// everything it printed, standard output and error together. Waits off the cooperative threads.
func runProcess(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await offThePool {
        let (read, write) = try ChildProcess.pipe()
        let reader = FileHandle(fileDescriptor: read, closeOnDealloc: true)
        let child: ChildProcess
        do {
            defer { close(write) }
            child = try ChildProcess(
                executable,
                arguments,
                directory: PluginFixtures.repositoryRoot.path,
                standardOutput: .descriptor(write),
                standardError: .descriptor(write)
            )
        }
        // Ends when the child and whatever it left running have closed the pipe: nothing else has it.
        let data = reader.readDataToEndOfFile()
        child.waitUntilExit(timeoutSeconds: 600)
        return (child.exitStatus ?? -1, String(decoding: data, as: UTF8.self))
    }
}
