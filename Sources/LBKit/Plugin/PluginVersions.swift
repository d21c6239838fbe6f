import Foundation
import Logging
import NIOConcurrencyHelpers

/// Every version of one plugin loaded so far, and the one new instances use.
///
/// A new build of a plugin's file (same path) is noticed when the policy is next made
/// (`setPolicy`): the file's identity is compared with the last one seen (a `stat`, nothing more),
/// and only a changed file is read, hashed and, if its content is new, loaded as a private copy
/// beside the old versions (`PluginLibrary.load`). The new version becomes current once an instance
/// of it is created; a version that is refused (its ABI, its name) or whose instance fails to
/// create leaves the current one in place, and is reported once. Old versions stay loaded (never
/// dlclose); their instances are destroyed after their last pick, as on any policy switch.
public final class PluginVersions: Sendable {
    public let name: String
    /// The path the plugin was found at, where new builds appear.
    public let path: String

    private struct State {
        /// Versions adopted, oldest first; the last is current.
        var adopted: [PluginLibrary]
        /// Loaded but not yet adopted: no instance of it was created yet.
        var pending: PluginLibrary?
        /// Content hashes that failed to load, with the reason.
        var refused: [String: String] = [:]
        /// The file's identity when it was last looked at.
        var lastSeen: FileIdentity?
    }

    private let state: NIOLockedValueBox<State>

    public init(_ first: PluginLibrary) {
        self.name = first.name
        self.path = first.path
        self.state = NIOLockedValueBox(State(adopted: [first], lastSeen: first.identity))
    }

    /// The version new instances use.
    public var current: PluginLibrary { self.state.withLockedValue { $0.adopted.last! } }

    /// Every version loaded, oldest first (the current one last among the adopted).
    public var loaded: [PluginLibrary] {
        self.state.withLockedValue { $0.adopted + ($0.pending.map { [$0] } ?? []) }
    }

    /// Whether the file changed since it was last looked at: a `stat`, for the control plane to
    /// decide that a `setPolicy` repeating the spec in force is worth building.
    public var fileChanged: Bool {
        let now = FileIdentity(path: self.path)
        return self.state.withLockedValue { now != nil && now != $0.lastSeen }
    }

    /// Creates an instance with `make`, from the newest good version of the file: the current one,
    /// or a new build found at the path, which becomes current if `make` succeeds with it.
    public func makeInstance<Result>(
        logger: Logger,
        _ make: (PluginLibrary) throws(L4LBError) -> Result
    ) throws(L4LBError) -> Result {
        let (candidate, current) = self.newest(logger: logger)
        guard candidate.sha256 != current.sha256 else { return try make(current) }
        let made: Result
        do throws(L4LBError) {
            made = try make(candidate)
        } catch {
            throw L4LBError(
                error.code,
                "new version \(candidate.sha256.prefix(12)) of plugin \(self.name): \(error.message); version \(current.sha256.prefix(12)) stays in use"
            )
        }
        self.state.withLockedValue { state in
            state.adopted.removeAll { $0.sha256 == candidate.sha256 }
            state.adopted.append(candidate)
            if state.pending?.sha256 == candidate.sha256 { state.pending = nil }
        }
        logger.info(
            "plugin upgraded: new instances use the new version; the old one's instances end after their last pick",
            metadata: [
                "plugin": "\(self.name)", "sha256": "\(candidate.sha256)", "previous": "\(current.sha256)",
                "abi": "\(candidate.abiMajor).\(candidate.abiMinor)",
            ]
        )
        return made
    }

    /// The version to try (a new build, if the file holds one that loads) and the current one.
    private func newest(logger: Logger) -> (candidate: PluginLibrary, current: PluginLibrary) {
        let now = FileIdentity(path: self.path)
        let (current, pending, lastSeen) = self.state.withLockedValue { ($0.adopted.last!, $0.pending, $0.lastSeen) }
        guard let now, now != lastSeen else { return (pending ?? current, current) }
        self.state.withLockedValue { $0.lastSeen = now }
        // Changed on disk. Hashed first, so that content already loaded (a rollback, a touch) or
        // already refused is not loaded again: each load is a private copy that stays for good.
        guard let content = FileManager.default.contents(atPath: self.path) else {
            return (pending ?? current, current)
        }
        let hash = SHA256.hex(content)
        let known = self.state.withLockedValue { state -> (PluginLibrary?, Bool) in
            (
                (state.adopted + (state.pending.map { [$0] } ?? [])).first { $0.sha256 == hash },
                state.refused[hash] != nil
            )
        }
        if let version = known.0 { return (version, current) }
        if known.1 { return (pending ?? current, current) }
        // The checks, the read and the hash of what is loaded are PluginLibrary.load's.
        let loaded: PluginLibrary
        do throws(L4LBError) {
            loaded = try PluginLibrary.load(path: self.path, host: current.host)
        } catch {
            self.state.withLockedValue { $0.refused[hash] = error.message }
            logger.warning(
                "refused the new version of plugin \(self.name): \(error.message); the current version stays",
                metadata: ["sha256": "\(hash)", "current": "\(current.sha256)"]
            )
            return (pending ?? current, current)
        }
        return self.state.withLockedValue { state in
            if let known = (state.adopted + (state.pending.map { [$0] } ?? [])).first(where: {
                $0.sha256 == loaded.sha256
            }) {
                return (known, current)
            }
            guard loaded.name == self.name else {
                let reason = "it now declares the name '\(loaded.name)'"
                state.refused[loaded.sha256] = reason
                logger.warning(
                    "refused the new version of plugin \(self.name): \(reason); the current version stays",
                    metadata: ["sha256": "\(loaded.sha256)"]
                )
                return (state.pending ?? current, current)
            }
            state.pending = loaded
            return (loaded, current)
        }
    }
}
