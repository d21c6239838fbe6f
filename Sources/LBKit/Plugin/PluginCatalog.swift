import Foundation
import Logging

/// Finds policy plugins in the plugin directories, loads each once, and registers the good ones in a
/// `PolicyRegistry` under the names they declare. Operators (and Redis) name plugins only by those
/// names, never by path.
public struct PluginCatalog: Sendable {
    public struct Refusal: Sendable, Hashable {
        public let path: String
        public let reason: String
    }

    /// Plugins that loaded, by name.
    public private(set) var plugins: [PluginLibrary] = []
    /// Files that looked like plugins and were refused, with the reason.
    public private(set) var refused: [Refusal] = []
    /// Each loaded plugin's versions (a new build at its path is loaded beside the old one).
    public private(set) var versions: [PluginVersions] = []

    /// In the default directory (next to the executable) only files named like l4lb's own plugins
    /// are considered, so that other libraries there are not opened; in a `--plugin-dir` every
    /// `.so` file is.
    public static let defaultPattern = (prefix: "libl4lb-policy-", suffix: ".so")

    /// The directory of the running executable, where `swift build` and the installer put plugins.
    public static var executableDirectory: String? {
        guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            return nil
        }
        return (path as NSString).deletingLastPathComponent
    }

    /// Scans `directories` (all `.so` files) and `defaultDirectory` (l4lb's own plugin names only).
    /// A plugin whose name is taken (by a built-in or an earlier plugin) is refused.
    public init(directories: [String], defaultDirectory: String?, reservedNames: Set<String>) {
        var candidates: [String] = []
        for directory in directories {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            if files.isEmpty, !FileManager.default.fileExists(atPath: directory) {
                self.refused.append(Refusal(path: directory, reason: "plugin directory does not exist"))
            }
            candidates += files.filter { $0.hasSuffix(".so") }.sorted().map { "\(directory)/\($0)" }
        }
        if let defaultDirectory {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: defaultDirectory)) ?? []
            candidates += files.filter {
                $0.hasPrefix(Self.defaultPattern.prefix) && $0.hasSuffix(Self.defaultPattern.suffix)
            }
            .sorted().map { "\(defaultDirectory)/\($0)" }
        }
        var taken = reservedNames
        var seenPaths = Set<String>()
        for path in candidates {
            let canonical = (path as NSString).resolvingSymlinksInPath
            guard seenPaths.insert(canonical).inserted else { continue }
            do {
                let plugin = try PluginLibrary.load(path: path)
                guard taken.insert(plugin.name).inserted else {
                    self.refused.append(Refusal(path: path, reason: "policy name '\(plugin.name)' is already taken"))
                    continue
                }
                self.plugins.append(plugin)
                self.versions.append(PluginVersions(plugin))
            } catch {
                self.refused.append(Refusal(path: path, reason: error.message))
            }
        }
    }

    /// Registers every loaded plugin in `registry`: each instance is made from the newest good
    /// version of its file (`PluginVersions`). `fallback` makes the policy that serves a client when a
    /// plugin's pick answers nonsense.
    public func register(
        in registry: PolicyRegistry,
        faults: PluginFaults,
        logger: Logger,
        fallback: @escaping @Sendable () -> any LoadBalancingPolicy
    ) {
        for versions in self.versions {
            registry.register(
                versions.name,
                factory: { spec throws(L4LBError) in
                    try versions.makeInstance(logger: logger) { plugin throws(L4LBError) in
                        try PluginPolicy(plugin: plugin, spec: spec, fallback: fallback(), faults: faults)
                    }
                },
                changed: { versions.fileChanged }
            )
        }
    }

    /// One line per plugin and per refusal, for the log.
    public func log(to logger: Logger) {
        for plugin in self.plugins {
            logger.info("loaded policy plugin", metadata: ["policy": "\(plugin.name)", "path": "\(plugin.path)"])
        }
        for refusal in self.refused {
            logger.warning("refused policy plugin: \(refusal.reason)", metadata: ["path": "\(refusal.path)"])
        }
    }
}
