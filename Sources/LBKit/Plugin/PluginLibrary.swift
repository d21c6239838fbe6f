import CLBPolicy

#if canImport(Glibc)
import Glibc
#endif

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

    /// The ABI version l4lb speaks.
    public static let abiMajor = UInt32(L4LB_POLICY_ABI_MAJOR)
    public static let abiMinor = UInt32(L4LB_POLICY_ABI_MINOR)

    /// The descriptor's size in ABI 1.0, the least a plugin of any 1.x minor version declares.
    static let minimumDescriptorSize = MemoryLayout<l4lb_policy_descriptor>.offset(of: \.host)!
    /// The least descriptor size that holds `explain` (ABI 1.2).
    static let explainDescriptorSize =
        MemoryLayout<l4lb_policy_descriptor>.offset(of: \.explain)! + MemoryLayout<UnsafeRawPointer?>.size

    /// Whether the plugin explains its picks (ABI 1.2 and an `explain` function).
    public var explains: Bool { self.descriptor.explain != nil }

    /// Opens `path` and checks it; throws a one-line error naming the file and the reason.
    /// - Parameter host: what the plugin is given for logging; by default a log through the process's
    ///   logging system.
    public static func load(path: String, host: PluginHost? = nil) throws(L4LBError) -> PluginLibrary {
        // Checked before dlopen, never after: dlopen runs the library's constructors, so a refused
        // file's code would already have run. The file is opened once and the descriptor checked and
        // loaded, so the file cannot be swapped between the check and the load.
        let fd = try Self.openChecked(path)
        // The descriptor stays open for the life of the process, as the library stays loaded: its
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
            host: host
        )
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
