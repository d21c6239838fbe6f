import CMaxMindDB
import Foundation

/// One opened and verified MaxMind database. Immutable once open; closed when the last pick that
/// uses it lets go.
final class GeoDatabase: @unchecked Sendable {
    // @unchecked: libmaxminddb's lookups on an opened database are thread-safe (it only reads the
    // memory-mapped file); nothing here is mutated after init.

    struct Failure: Error {
        let message: String
    }

    /// A file's identity, to notice a new version (replaced by rename or rewritten in place).
    /// Refuses anything but a regular file before libmaxminddb opens it: a FIFO would block the
    /// opening thread (the control plane's) until someone wrote to it, and a device could be endless.
    /// Opened non-blocking, so that the check itself never waits.
    static func checkRegularFile(_ path: String) throws(Failure) {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw Failure(message: "cannot open MaxMind database \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw Failure(message: "cannot open MaxMind database \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw Failure(message: "cannot open MaxMind database \(path): not a regular file")
        }
    }

    struct FileVersion: Equatable {
        var inode: UInt64
        var size: Int64
        var modified: timespec

        static func == (a: FileVersion, b: FileVersion) -> Bool {
            a.inode == b.inode && a.size == b.size && a.modified.tv_sec == b.modified.tv_sec
                && a.modified.tv_nsec == b.modified.tv_nsec
        }

        init?(path: String) {
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }
            self.inode = UInt64(info.st_ino)
            self.size = Int64(info.st_size)
            self.modified = info.st_mtim
        }
    }

    /// On the heap, at a fixed address: libmaxminddb keeps pointers to it in every entry it returns,
    /// and `&property` may hand C a temporary copy.
    private let mmdb: UnsafeMutablePointer<MMDB_s>
    let path: String
    let version: FileVersion?
    let databaseType: String
    /// Each data record's codes, decoded once at open: a lookup then walks the search tree and reads
    /// this table instead of searching the record's maps for three keys (most of a lookup's time).
    private let codesByRecord: GeoCodesTable

    /// Opens `path` and walks its whole search tree and data section once, so that a corrupt file is
    /// refused here with a clear message rather than found out by a client's lookup, and each
    /// record's codes are decoded once.
    init(path: String) throws(Failure) {
        // Everything that can fail happens before `self` is complete, so that a failure never runs
        // deinit on a half-made database.
        let version = FileVersion(path: path)
        try Self.checkRegularFile(path)
        let mmdb = UnsafeMutablePointer<MMDB_s>.allocate(capacity: 1)
        mmdb.initialize(to: MMDB_s())
        let status = MMDB_open(path, UInt32(MMDB_MODE_MMAP), mmdb)
        guard status == MMDB_SUCCESS else {
            mmdb.deallocate()
            throw Failure(message: "cannot open MaxMind database \(path): \(String(cString: MMDB_strerror(status)))")
        }
        var table = GeoCodesTable()
        if let problem = Self.verify(mmdb, recording: &table) {
            MMDB_close(mmdb)
            mmdb.deallocate()
            throw Failure(message: "MaxMind database \(path) is corrupt: \(problem)")
        }
        self.mmdb = mmdb
        self.path = path
        self.version = version
        self.databaseType = mmdb.pointee.metadata.database_type.map { String(cString: $0) } ?? "unknown"
        self.codesByRecord = table
    }

    deinit {
        MMDB_close(self.mmdb)
        self.mmdb.deallocate()
    }

    /// A client's codes, as views into the memory-mapped file: no copy, no allocation per pick. Valid
    /// only while the `GeoDatabase` they came from is alive.
    struct Codes {
        var country: UnsafeRawBufferPointer
        var continent: UnsafeRawBufferPointer
        /// The country is where the address is registered, not where it is located (the database
        /// knew no location).
        var registered = false

        static var unknown: Codes {
            Codes(
                country: UnsafeRawBufferPointer(start: nil, count: 0),
                continent: UnsafeRawBufferPointer(start: nil, count: 0)
            )
        }
    }

    /// The country (falling back to the registered country) and continent codes of an address;
    /// empty when unknown.
    func lookup(_ address: UnsafePointer<sockaddr>) -> Codes {
        var error: Int32 = 0
        var result = MMDB_lookup_sockaddr(self.mmdb, address, &error)
        guard error == MMDB_SUCCESS, result.found_entry else { return .unknown }
        return self.codesByRecord[result.entry.offset] ?? Self.codes(of: &result.entry)
    }

    /// A record's codes, decoded from its maps.
    fileprivate static func codes(of entry: inout MMDB_entry_s) -> Codes {
        var country = Self.string(&entry, GeoPaths.countryISOCode)
        let registered = country.isEmpty
        if registered { country = Self.string(&entry, GeoPaths.registeredCountryISOCode) }
        let continent = Self.string(&entry, GeoPaths.continentCode)
        return Codes(country: country, continent: continent, registered: registered && !country.isEmpty)
    }

    private static func string(
        _ entry: inout MMDB_entry_s,
        _ path: UnsafePointer<UnsafePointer<CChar>?>
    ) -> UnsafeRawBufferPointer {
        var data = MMDB_entry_data_s()
        guard MMDB_aget_value(&entry, &data, path) == MMDB_SUCCESS, data.has_data,
            data.type == UInt32(MMDB_DATA_TYPE_UTF8_STRING), let text = data.utf8_string
        else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: text, count: Int(data.data_size))
    }

    /// Walks every node of the search tree and decodes every data record once, recording its codes;
    /// returns the first problem found.
    private static func verify(_ mmdb: UnsafeMutablePointer<MMDB_s>, recording table: inout GeoCodesTable) -> String? {
        let nodeCount = mmdb.pointee.metadata.node_count
        var decoded = Set<UInt32>()
        var node = MMDB_search_node_s()
        for number in 0..<nodeCount {
            let status = MMDB_read_node(mmdb, number, &node)
            guard status == MMDB_SUCCESS else { return String(cString: MMDB_strerror(status)) }
            for (type, entry) in [
                (node.left_record_type, node.left_record_entry), (node.right_record_type, node.right_record_entry),
            ] {
                switch Int32(type) {
                case MMDB_RECORD_TYPE_INVALID:
                    return "search tree node \(number) points outside the file"
                case MMDB_RECORD_TYPE_DATA:
                    guard decoded.insert(entry.offset).inserted else { continue }
                    var start = entry
                    var list: UnsafeMutablePointer<MMDB_entry_data_list_s>?
                    let status = MMDB_get_entry_data_list(&start, &list)
                    MMDB_free_entry_data_list(list)
                    guard status == MMDB_SUCCESS else {
                        return "data record at offset \(entry.offset): \(String(cString: MMDB_strerror(status)))"
                    }
                    var record = entry
                    table.record(entry.offset, Self.codes(of: &record))
                default:
                    continue
                }
            }
        }
        return nil
    }
}

/// Each data record's codes, by the record's offset, with the distinct codes stored once (a City
/// database has hundreds of thousands of records but a few thousand distinct codes): 6 bytes or so
/// per record. Built at open and never changed, so lookups read it from any thread without a lock.
/// Past `recordLimit` records, or `UInt16` distinct codes, the rest are decoded at each lookup.
struct GeoCodesTable {
    static let recordLimit = 1_000_000

    private var idByRecord: [UInt32: UInt16] = [:]
    private var distinct: [GeoDatabase.Codes] = []
    private var idByCodes: [CodesKey: UInt16] = [:]

    /// The codes by content, for storing each once.
    private struct CodesKey: Hashable {
        let country: [UInt8]
        let continent: [UInt8]
        let registered: Bool
    }

    subscript(offset: UInt32) -> GeoDatabase.Codes? {
        self.idByRecord[offset].map { self.distinct[Int($0)] }
    }

    mutating func record(_ offset: UInt32, _ codes: GeoDatabase.Codes) {
        guard self.idByRecord.count < Self.recordLimit else { return }
        let key = CodesKey(
            country: Array(codes.country),
            continent: Array(codes.continent),
            registered: codes.registered
        )
        if let id = self.idByCodes[key] {
            self.idByRecord[offset] = id
        } else if self.distinct.count <= Int(UInt16.max) {
            let id = UInt16(self.distinct.count)
            self.distinct.append(codes)
            self.idByCodes[key] = id
            self.idByRecord[offset] = id
        }
    }
}

/// The NULL-terminated key paths passed to MMDB_aget_value, built once.
enum GeoPaths {
    nonisolated(unsafe) static let countryISOCode = make(["country", "iso_code"])
    nonisolated(unsafe) static let registeredCountryISOCode = make(["registered_country", "iso_code"])
    nonisolated(unsafe) static let continentCode = make(["continent", "code"])

    private static func make(_ keys: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        let path = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: keys.count + 1)
        for (index, key) in keys.enumerated() {
            path[index] = UnsafePointer(strdup(key))
        }
        path[keys.count] = nil
        return UnsafePointer(path)
    }
}
