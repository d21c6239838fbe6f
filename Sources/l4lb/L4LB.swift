import ArgumentParser

@main
struct L4LB: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "l4lb",
        abstract: "A Layer-4 (TCP) load balancer.",
        discussion: L4LB.manual,
        subcommands: [
            RunCommand.self, ControlCommand.self, PoliciesCommand.self, PluginsCommand.self, PluginCommand.self,
        ],
        defaultSubcommand: RunCommand.self
    )

    /// The discussion of `--help` and of the man page (generated from this parser): what l4lb is,
    /// its signals, its Redis keys and channels, and its files.
    static let manual = """
        l4lb accepts TCP clients, picks a backend for each with the active policy and relays bytes \
        both ways. `run` is the default subcommand: `l4lb --listen 127.0.0.1:8080 --backend 127.0.0.1:9001`.

        SIGNALS
          SIGTERM, SIGINT: stop accepting, let open connections finish within --drain-timeout, exit 0.
          SIGHUP: reopen the log files; read --config again and apply the backends, the policy and \
        the listen addresses.
          SIGUSR2: live upgrade: start the binary at l4lb's path with the same arguments, hand it the \
        listening sockets and the pid file, then drain and exit (`l4lb ctl upgrade`).

        REDIS (with --redis; every name takes the --redis-prefix P: prefix)
          serverPool (key): the pool, a JSON array of "host:port" or {"address", "weight", "region"}.
          serverPool:meta (hash): version and changed_at of the pool.
          policy (key): the policy in force, NAME or NAME {json}.
          addServer, removeServer, setPolicy, reloadPool (channels): change the pool or the policy.
          setShadowPolicy, clearShadowPolicy (channels), shadowPolicy (key): a policy asked but not \
        obeyed (`l4lb ctl shadow`).
          explain (channel), explain:ID (lists): `l4lb ctl explain` asks and the instances answer.
          events (channel): backend-retired, backend-restored, backend-removed.
          status:ID (key): each instance's state, refreshed every 5 s (`l4lb ctl instances`).

        FILES
          /etc/l4lb/l4lb.conf: flags, one per line, without the dashes (--config).
          /usr/lib/l4lb/plugins: policy plugins found at start; more with --plugin-dir.
          /run/l4lb/l4lb.pid: the pid file of the packaged service (--pid-file).
          /lib/systemd/system/l4lb.service, l4lb.socket: the systemd units.

        See /usr/share/doc/l4lb for the manual (operations.md, control-plane.md, plugins.md).
        """

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
                message += " (a duration: a non-negative number with us, ms, s, m or h, e.g. 3s)"
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
