import ArgumentParser

@main
struct L4LB: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "l4lb",
        abstract: "A Layer-4 (TCP) load balancer.",
        discussion: """
            l4lb accepts TCP clients, picks a backend for each with the active policy and relays bytes \
            both ways. `run` is the default subcommand: `l4lb --listen 127.0.0.1:8080 --backend 127.0.0.1:9001`.
            """,
        subcommands: [
            RunCommand.self, ControlCommand.self, PoliciesCommand.self, PluginsCommand.self, PluginCommand.self,
        ],
        defaultSubcommand: RunCommand.self
    )

    /// ArgumentParser's own run, except that a command line it refuses (an unknown flag, a value
    /// of the wrong type) is one line and status 2, like every other refusal of l4lb's, instead of
    /// a usage dump.
    static func main() async {
        let command: any ParsableCommand
        do {
            command = try Self.parseAsRoot()
        } catch {
            guard Self.exitCode(for: error) != .success else { Self.exit(withError: error) }  // --help
            var message = Self.message(for: error).split(separator: "\n").first.map(String.init) ?? "bad command line"
            if message.contains("<duration>") {
                message += " (a duration: a non-negative number with ms, s, m or h, e.g. 3s)"
            }
            Self.exit(withError: exitWithOperatorError(message))
        }
        do {
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                var command = command
                try command.run()
            }
        } catch {
            Self.exit(withError: error)
        }
    }
}
