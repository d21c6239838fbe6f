import L4LBPluginSDK
import Synchronization

/// One geo instance's database: the version in use, swapped whole when a new version of the file
/// appears, and a broken new version refused once.
///
/// Its own object, apart from `GeoRouter`, so that the reload watcher can hold it strongly: a weak
/// reference to the router gave every retain and release of it, on every pick, the runtime's slow
/// path (an object that is weakly referenced keeps its counts in a side table), which was a third
/// of a geo pick.
final class GeoDatabaseSource: Sendable {
    let path: String
    private let database: Mutex<GeoDatabase>
    /// The last file version refused, so that a broken file is reported once, not on every check.
    private let refusedVersion = Mutex<GeoDatabase.FileVersion?>(nil)

    init(path: String) throws(GeoDatabase.Failure) {
        self.path = path
        self.database = Mutex(try GeoDatabase(path: path))
    }

    /// The version in use; keep it for as long as codes read from it are in use.
    var current: GeoDatabase { self.database.withLock { $0 } }

    /// Opens the new version of the file, if there is one; a broken new file is refused with a line
    /// in l4lb's log and the database in use stays.
    func reloadIfChanged() {
        let current = self.current
        guard let version = GeoDatabase.FileVersion(path: self.path), version != current.version,
            self.refusedVersion.withLock({ $0 }) != version
        else { return }
        do {
            let fresh = try GeoDatabase(path: self.path)
            self.database.withLock { $0 = fresh }
            PluginLog.info("reloaded \(self.path) (\(fresh.databaseType))")
        } catch {
            self.refusedVersion.withLock { $0 = version }
            PluginLog.warning("refused the new version of \(self.path): \(error.message); keeping the one in use")
        }
    }
}
