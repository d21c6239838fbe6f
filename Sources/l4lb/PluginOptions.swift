import ArgumentParser
import Foundation
import LBKit
import Logging
import Policies

/// `--plugin-dir`, and the policy registry it leads to: the built-in policies plus every plugin found.
struct PluginOptions: ParsableArguments {
    @Option(
        name: .customLong("plugin-dir"),
        help:
            "A directory of policy plugins (*.so); repeatable. l4lb's own plugins next to the executable are always found."
    )
    var directories: [String] = []

    func makeCatalog() -> PluginCatalog {
        Self.makeCatalog(directories: self.directories)
    }

    /// The catalog of `directories`, of l4lb's own plugins next to the executable, and of the
    /// installed ones.
    static func makeCatalog(directories: [String]) -> PluginCatalog {
        // Installed plugins live in PREFIX/lib/l4lb/plugins, beside PREFIX/bin/l4lb.
        var directories = directories
        if let executable = PluginCatalog.executableDirectory {
            let installed = ((executable as NSString).deletingLastPathComponent as NSString).appendingPathComponent(
                "lib/l4lb/plugins"
            )
            if FileManager.default.fileExists(atPath: installed) { directories.append(installed) }
        }
        return PluginCatalog(
            directories: directories,
            defaultDirectory: PluginCatalog.executableDirectory,
            reservedNames: Set(BuiltinPolicies.names)
        )
    }

    /// The built-in policies and the catalog's plugins; a plugin's bad picks fall back to round-robin.
    static func makeRegistry(catalog: PluginCatalog, logger: Logger) -> (PolicyRegistry, PluginFaults) {
        let registry = BuiltinPolicies.makeRegistry()
        let faults = PluginFaults(logger: logger)
        catalog.register(in: registry, faults: faults, logger: logger) { RoundRobinPolicy() }
        return (registry, faults)
    }
}
