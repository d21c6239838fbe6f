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
}
