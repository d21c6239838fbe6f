import ArgumentParser
import LBKit
import Logging
import Policies

/// `l4lb policies`: the names `--policy` accepts.
struct PoliciesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policies",
        abstract: "List the policies --policy accepts: the built-in ones and those of the plugins found."
    )

    @OptionGroup var plugins: PluginOptions

    func run() {
        let catalog = self.plugins.makeCatalog()
        var logger = Logger(label: "l4lb")
        logger.logLevel = .critical
        for name in PluginOptions.makeRegistry(catalog: catalog, logger: logger).0.names {
            print(name)
        }
    }
}
