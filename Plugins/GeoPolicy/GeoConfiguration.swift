import Foundation

/// The geo plugin's configuration, the JSON object after the policy name:
/// `{"database": "/var/lib/GeoIP/GeoLite2-Country.mmdb", "regions": {"eu-west": ["GB", "IE"]},
///   "fallback": ["eu-west"], "reload_check_seconds": 1}`.
struct GeoConfiguration {
    struct Failure: Error {
        let message: String
    }

    /// The MaxMind database (Country or City, GeoIP2 or GeoLite2).
    var database: String
    /// Region names of backends and the country or continent codes each one serves, for regions that
    /// are not themselves a code.
    var regions: [(name: [UInt8], codes: [[UInt8]])]
    /// Regions tried in order when no backend matches the client's country or continent.
    var fallback: [[UInt8]]
    /// How often the database file is checked for a new version.
    var reloadCheckInterval: TimeInterval

    init(json text: String) throws(Failure) {
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw Failure(message: "geo needs a configuration: {\"database\": \"/path/to/GeoLite2-Country.mmdb\"}")
        }
        let object: [String: Any]
        do {
            guard let decoded = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                throw Failure(message: "the configuration must be a JSON object")
            }
            object = decoded
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(message: "the configuration is not valid JSON")
        }
        let known: Set<String> = ["database", "regions", "fallback", "reload_check_seconds"]
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw Failure(
                message: "unknown configuration key '\(unknown)' (known: \(known.sorted().joined(separator: ", ")))"
            )
        }
        guard let database = object["database"] as? String, !database.isEmpty else {
            throw Failure(message: "\"database\" (the path of a MaxMind .mmdb file) is required")
        }
        self.database = database
        self.regions = []
        if let regions = object["regions"] {
            guard let map = regions as? [String: Any] else {
                throw Failure(message: "\"regions\" must map region names to lists of country or continent codes")
            }
            for (name, codes) in map.sorted(by: { $0.key < $1.key }) {
                guard let list = codes as? [String] else {
                    throw Failure(message: "\"regions\".\"\(name)\" must be a list of codes")
                }
                self.regions.append((Array(name.utf8), list.map { Array($0.uppercased().utf8) }))
            }
        }
        self.fallback = []
        if let fallback = object["fallback"] {
            guard let list = fallback as? [String] else {
                throw Failure(message: "\"fallback\" must be a list of region names")
            }
            self.fallback = list.map { Array($0.utf8) }
        }
        self.reloadCheckInterval = 1
        if let seconds = object["reload_check_seconds"] {
            guard let number = seconds as? Double, number > 0, number <= 3600 else {
                throw Failure(message: "\"reload_check_seconds\" must be a number of seconds in (0, 3600]")
            }
            self.reloadCheckInterval = number
        }
    }
}
