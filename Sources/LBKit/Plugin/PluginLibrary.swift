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

    /// Opens `path` and checks it; throws a one-line error naming the file and the reason.
    /// - Parameter host: what the plugin is given for logging; by default a log through the process's
    ///   logging system.
    public static func load(path: String, host: PluginHost? = nil) throws(L4LBError) -> PluginLibrary {
        try Self.checkOwnership(path)
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
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

    /// Refuses a file, or a directory holding it, that someone other than its owner can write: such a
    /// plugin could be replaced with code that runs inside the load balancer.
    static func checkOwnership(_ path: String) throws(L4LBError) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw L4LBError(.invalidPlugin, "plugin \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw L4LBError(.invalidPlugin, "plugin \(path): not a regular file")
        }
        guard info.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
            throw L4LBError(.invalidPlugin, "plugin \(path): writable by users other than its owner")
        }
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        var directoryInfo = stat()
        guard stat(directory.isEmpty ? "/" : directory, &directoryInfo) == 0 else {
            throw L4LBError(.invalidPlugin, "plugin \(path): cannot inspect its directory")
        }
        guard directoryInfo.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
            throw L4LBError(
                .invalidPlugin,
                "plugin \(path): its directory \(directory) is writable by users other than its owner"
            )
        }
    }
}
