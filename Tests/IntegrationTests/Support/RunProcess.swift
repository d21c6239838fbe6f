/// Runs `executable` with `arguments` (in the repository's root) to its end; its exit status and
/// everything it printed, standard output and error together. Waits off the cooperative threads.
func runProcess(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await offThePool {
        try ChildProcess.run(executable, arguments, directory: PluginFixtures.repositoryRoot.path, mergingErrors: true)
    }
}
