import ArgumentParser
import Foundation
import LBKit
import LBOperations
import Logging
import NIOCore
import Policies

/// `l4lb plugins`: what the plugin directories hold, and why anything was refused.
struct PluginsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "List the policy plugins l4lb finds, and the files it refuses."
    )

    @OptionGroup var plugins: PluginOptions

    @Option(
        help: ArgumentHelp(
            "Show what the l4lb whose admin endpoint is at this address has loaded: every version of each plugin.",
            valueName: "host:port"
        )
    )
    var admin: String?

    func run() throws {
        if let admin = self.admin {
            try self.showRunning(admin)
            return
        }
        let catalog = self.plugins.makeCatalog()
        if catalog.plugins.isEmpty { print("no policy plugins found") }
        // A running l4lb shows every version it has loaded in /status (`plugins`); this is what a
        // start would load now.
        for plugin in catalog.plugins {
            print(
                "\(plugin.name)\tABI \(plugin.abiMajor).\(plugin.abiMinor)\tsha256 \(plugin.sha256.prefix(16))\tloaded \(Timestamp.iso8601(plugin.loadedAt))\t\(plugin.path)"
            )
        }
        for refusal in catalog.refused {
            print("refused\t\(refusal.path): \(refusal.reason)")
        }
    }

    /// A running l4lb's plugins and their versions, from its `/status`.
    private func showRunning(_ admin: String) throws {
        let document: InstanceStatus.Document
        do {
            let body = try AdminClient.get(try HostAndPort(parsing: admin), path: "/status")
            document = try JSONDecoder().decode(InstanceStatus.Document.self, from: Data(body.utf8))
        } catch let error as L4LBError {
            throw exitWithOperatorError(error.message)
        } catch {
            throw exitWithOperatorError("--admin \(admin): /status is not l4lb's status document")
        }
        let plugins = document.plugins ?? []
        if plugins.isEmpty { print("\(document.instance): no policy plugins loaded") }
        for plugin in plugins {
            print("\(plugin.name)\t\(plugin.path)")
            for version in plugin.versions {
                print(
                    "  sha256 \(version.sha256.prefix(16))\tABI \(version.abi)\tloaded \(version.loadedAt)\(version.current ? "\tcurrent" : "")"
                )
            }
        }
    }
}

/// `l4lb plugin check PATH [CONFIG]`: the first thing a plugin author runs.
struct PluginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin",
        abstract: "Tools for policy plugin authors.",
        subcommands: [Check.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Load a plugin, create an instance and run picks on a synthetic pool."
        )

        @Argument(help: "The plugin's shared library.")
        var path: String

        @Argument(help: "The instance configuration, a JSON object.")
        var configuration: String?

        func run() throws {
            let plugin: PluginLibrary
            do {
                // The plugin's own log lines go to stderr, with the debug ones: stdout is the report.
                let output = try LogOutput(path: nil)
                let host = PluginHost(path: self.path) {
                    Logger(label: "l4lb") { LineLogHandler(label: $0, output: output, format: .text, level: .debug) }
                }
                plugin = try PluginLibrary.load(path: self.path, host: host)
            } catch {
                throw exitWithOperatorError(error.message)
            }
            print(
                "plugin \(plugin.name), ABI \(plugin.abiMajor).\(plugin.abiMinor) (l4lb speaks \(PluginLibrary.abiMajor).\(PluginLibrary.abiMinor))"
            )
            var logger = Logger(label: "l4lb")
            logger.logLevel = .critical
            let faults = PluginFaults(logger: logger)
            let policy: PluginPolicy
            do {
                let spec = try PolicySpec(parsing: "\(plugin.name) \(self.configuration ?? "")")
                policy = try PluginPolicy(plugin: plugin, spec: spec, fallback: RoundRobinPolicy(), faults: faults)
            } catch {
                throw exitWithOperatorError(error.message)
            }
            print("instance created")
            let router = Router(policy: policy)
            let backends = [
                ("10.0.0.1:80", "EU"), ("10.0.0.2:80", "NA"), ("10.0.0.3:80", "AS"), ("10.0.0.4:80", nil),
            ]
            do {
                try router.setPool(
                    backends.map { address, region in
                        BackendSpec(address: try HostAndPort(parsing: address), region: region)
                    }
                )
            } catch {
                throw exitWithOperatorError("\(error)")
            }
            print("synthetic pool: " + router.pool.specs.map(\.description).joined(separator: " "))
            let clients = ["81.2.69.160", "89.160.20.112", "216.160.83.56", "2001:218::1", "192.0.2.1"]
            for text in clients {
                let address = ClientAddress(try? SocketAddress(ipAddress: text, port: 40_000))
                let pick = router.table.selector.pick(for: address, excluding: .none)
                print("  client \(text) -> \(pick.map { router.pool[$0].description } ?? "no backend")")
            }
            guard faults.total == 0 else {
                throw exitWithOperatorError("\(faults.total) of \(clients.count) picks answered an invalid index")
            }
            print("ok")
        }
    }
}
