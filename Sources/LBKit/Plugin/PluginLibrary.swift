import CLBPolicy
import CLinux
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What tells one version of a file from the next without reading it: device, inode, size and
/// modification time (a new build written in place or renamed over the old one changes one of them).
struct FileIdentity: Hashable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modified: Int64
    var modifiedNanoseconds: Int64

    init(_ info: stat) {
        self.device = UInt64(info.st_dev)
        self.inode = UInt64(info.st_ino)
        self.size = Int64(info.st_size)
        self.modified = Int64(info.st_mtim.tv_sec)
        self.modifiedNanoseconds = Int64(info.st_mtim.tv_nsec)
    }

    init(fd: Int32) {
        var info = stat()
        _ = fstat(fd, &info)
        self.init(info)
    }

    /// The identity of the file `path` names now (symbolic links followed), or nil.
    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        self.init(info)
    }
}

/// A policy plugin whose library was opened and whose descriptor passed every check.
///
/// Plugins are never unloaded: a plugin may be written in Swift, and unloading Swift code (or any
/// code whose threads or callbacks may still run) is not safe while the process runs.
public struct PluginLibrary: @unchecked Sendable {
    // @unchecked: the descriptor holds C function pointers and a static name, all immutable and
    // valid for the life of the process.

    public let name: String
    public let path: String
    public let abiMajor: UInt32
    public let abiMinor: UInt32
    let descriptor: l4lb_policy_descriptor
    /// The services (a log) this plugin was given at entry.
    public let host: PluginHost
    /// The SHA-256 of the file as loaded, as `sha256sum` prints it: the version's name.
    public let sha256: String
    /// When this version was loaded.
    public let loadedAt: Date
    /// The file's identity when it was read, to notice cheaply that it changed since.
    let identity: FileIdentity

    /// The ABI version l4lb speaks.
    public static let abiMajor = UInt32(L4LB_POLICY_ABI_MAJOR)
    public static let abiMinor = UInt32(L4LB_POLICY_ABI_MINOR)

    /// The descriptor's size in ABI 1.0, the least a plugin of any 1.x minor version declares.
    static let minimumDescriptorSize = MemoryLayout<l4lb_policy_descriptor>.offset(of: \.host)!
    /// The least descriptor size that holds `explain` (ABI 1.2).
    static let explainDescriptorSize =
        MemoryLayout<l4lb_policy_descriptor>.offset(of: \.explain)! + MemoryLayout<UnsafeRawPointer?>.size

    /// The least descriptor size that holds `pick_pool` (ABI 1.3).
    static let pickPoolDescriptorSize =
        MemoryLayout<l4lb_policy_descriptor>.offset(of: \.pick_pool)! + MemoryLayout<UnsafeRawPointer?>.size

    /// Whether the plugin explains its picks (ABI 1.2 and an `explain` function).
    public var explains: Bool { self.descriptor.explain != nil }

    /// Whether the plugin picks from the live pool (ABI 1.3 and a `pick_pool` function), without a
    /// copy of every backend per pick.
    public var picksFromLivePool: Bool { self.descriptor.pick_pool != nil }

    /// Opens `path` and checks it; throws a one-line error naming the file and the reason.
    /// - Parameter host: what the plugin is given for logging; by default a log through the process's
    ///   logging system.
    public static func load(path: String, host: PluginHost? = nil) throws(L4LBError) -> PluginLibrary {
        // Checked before dlopen, never after: dlopen runs the library's constructors, so a refused
        // file's code would already have run. The file is opened once and the descriptor checked and
        // loaded, so the file cannot be swapped between the check and the load.
        let checked = try Self.openChecked(path)
        let identity = FileIdentity(fd: checked)
        let bytes: [UInt8]
        do {
            defer { close(checked) }
            bytes = try Self.readAll(checked, path: path)
        }
        // A private copy of this version: dlopen recognises a library it has loaded by its file (device
        // and inode) and by its name, so loading a new build written over the old file, or at the same
        // path, would hand back the old one. A copy in an anonymous file is a new inode every time,
        // and writing over the original file afterwards cannot corrupt the mapped code either.
        let fd = try Self.privateCopy(bytes, path: path)
        // The copy stays open for the life of the process, as the library stays loaded: its
        // /proc/self/fd path is the library's name for the dynamic loader, which would hand back this
        // library for a later dlopen of the same path if the number were reused.
        guard let handle = dlopen("/proc/self/fd/\(fd)", RTLD_NOW | RTLD_LOCAL) else {
            close(fd)
            let reason = dlerror().map { String(cString: $0) } ?? "dlopen failed"
            throw L4LBError(.invalidPlugin, "plugin \(path): not a loadable shared library: \(reason)")
        }
        guard let symbol = dlsym(handle, L4LB_POLICY_ENTRY_SYMBOL) else {
            throw L4LBError(
                .invalidPlugin,
                "plugin \(path): no \(L4LB_POLICY_ENTRY_SYMBOL) symbol: not an l4lb policy plugin"
            )
        }
        let entry = unsafeBitCast(symbol, to: l4lb_policy_entry_fn.self)
        let host = host ?? PluginHost(path: path)
        var descriptor = l4lb_policy_descriptor()
        descriptor.host = UnsafePointer(host.services)
        let status = entry(&descriptor, MemoryLayout<l4lb_policy_descriptor>.size)
        guard status == 0 else {
            throw L4LBError(.invalidPlugin, "plugin \(path): its entry point refused to load (status \(status))")
        }
        guard descriptor.abi_major == Self.abiMajor else {
            throw L4LBError(
                .invalidPlugin,
                "plugin \(path): built for plugin ABI \(descriptor.abi_major).\(descriptor.abi_minor), l4lb speaks \(Self.abiMajor).\(Self.abiMinor)"
            )
        }
        // A plugin built against an earlier minor version declares a smaller descriptor; its fields
        // are the first ones of ours.
        guard Int(descriptor.struct_size) >= Self.minimumDescriptorSize else {
            throw L4LBError(
                .invalidPlugin,
                "plugin \(path): descriptor of \(descriptor.struct_size) bytes is too small"
            )
        }
        // Fields past the plugin's declared size are not the plugin's: a 1.1 plugin's descriptor has
        // no `explain`, whatever the bytes there hold.
        if Int(descriptor.struct_size) < Self.explainDescriptorSize {
            descriptor.explain = nil
        }
        if Int(descriptor.struct_size) < Self.pickPoolDescriptorSize {
            descriptor.pick_pool = nil
        }
        guard let namePointer = descriptor.name else {
            throw L4LBError(.invalidPlugin, "plugin \(path): declares no name")
        }
        let name = String(cString: namePointer)
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII
                && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)
                    || "._-".unicodeScalars.contains(scalar))
        }
        guard !name.isEmpty, name.count <= 64, allowed else {
            throw L4LBError(
                .invalidPlugin,
                "plugin \(path): invalid name '\(name)' (use letters, digits, '.', '_', '-')"
            )
        }
        guard descriptor.instance_new != nil, descriptor.instance_destroy != nil, descriptor.pick != nil else {
            throw L4LBError(.invalidPlugin, "plugin \(path): instance_new, instance_destroy and pick are required")
        }
        host.named(name)
        return PluginLibrary(
            name: name,
            path: path,
            abiMajor: descriptor.abi_major,
            abiMinor: descriptor.abi_minor,
            descriptor: descriptor,
            host: host,
            sha256: SHA256.hex(bytes),
            loadedAt: Date(),
            identity: identity
        )
    }

    /// Plugin files larger than this are refused unread.
    static let maximumFileSize = 512 * 1024 * 1024

    private static func readAll(_ fd: Int32, path: String) throws(L4LBError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return bytes }
            if count < 0 {
                if errno == EINTR { continue }
                throw L4LBError(.invalidPlugin, "plugin \(path): \(String(cString: strerror(errno)))")
            }
            bytes += chunk[0..<count]
            guard bytes.count <= Self.maximumFileSize else {
                throw L4LBError(.invalidPlugin, "plugin \(path): larger than \(Self.maximumFileSize >> 20) MiB")
            }
        }
    }

    private static func privateCopy(_ bytes: [UInt8], path: String) throws(L4LBError) -> Int32 {
        let fd = l4lb_memfd("l4lb-plugin")
        guard fd >= 0 else {
            throw L4LBError(.invalidPlugin, "plugin \(path): memfd_create: \(String(cString: strerror(errno)))")
        }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw L4LBError(.invalidPlugin, "plugin \(path): cannot copy it: \(reason)")
            }
            written += count
        }
        return fd
    }

    /// Opens `path` and refuses it unless the file it resolves to (symbolic links followed) is a
    /// regular file owned by root or by l4lb's user that nobody else can write, in directories up to
    /// the root of which the same holds (a world-writable directory with the sticky bit, like /tmp,
    /// is allowed: nobody else can rename or replace what is in it). Otherwise someone else could put
    /// code inside the load balancer. Returns the open descriptor.
    static func openChecked(_ path: String) throws(L4LBError) -> Int32 {
        guard let resolved = realpath(path, nil) else {
            throw L4LBError(.invalidPlugin, "plugin \(path): \(String(cString: strerror(errno)))")
        }
        let real = String(cString: resolved)
        free(resolved)
        let fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            throw L4LBError(.invalidPlugin, "plugin \(path): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw L4LBError(.invalidPlugin, "plugin \(path): \(reason)")
        }
        let shown = real == path ? path : "\(path) (\(real))"
        if let problem = Self.unsafeOwnership(info, isFile: true) {
            close(fd)
            throw L4LBError(.invalidPlugin, "plugin \(shown): \(problem)")
        }
        var directory = real
        while let slash = directory.lastIndex(of: "/") {
            directory = slash == directory.startIndex ? "/" : String(directory[..<slash])
            var directoryInfo = stat()
            guard lstat(directory, &directoryInfo) == 0 else {
                close(fd)
                throw L4LBError(.invalidPlugin, "plugin \(shown): cannot inspect \(directory)")
            }
            if let problem = Self.unsafeOwnership(directoryInfo, isFile: false) {
                close(fd)
                throw L4LBError(.invalidPlugin, "plugin \(shown): its directory \(directory) is \(problem)")
            }
            if directory == "/" { break }
        }
        return fd
    }

    /// Why a file or directory with `info` is not safe to load code from, or nil.
    private static func unsafeOwnership(_ info: stat, isFile: Bool) -> String? {
        let type = info.st_mode & S_IFMT
        if isFile, type != S_IFREG { return "not a regular file" }
        if !isFile, type != S_IFDIR { return "not a directory" }
        if info.st_uid != 0, info.st_uid != geteuid() {
            return "owned by another user (uid \(info.st_uid))"
        }
        let writableByOthers = info.st_mode & (S_IWGRP | S_IWOTH) != 0
        let sticky = info.st_mode & S_ISVTX != 0
        if writableByOthers, isFile || !sticky {
            return "writable by users other than its owner"
        }
        return nil
    }
}
