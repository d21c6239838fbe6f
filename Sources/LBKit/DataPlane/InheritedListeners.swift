import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A listening socket this process was handed at start instead of opening it.
public struct InheritedListener: Sendable {
    public let fd: Int32
    let local: RawSocketAddress

    /// The address it listens on.
    public var address: SocketAddress? { self.local.socketAddress }
}

/// Listening sockets handed over at start, so that no client is refused while l4lb restarts:
/// - by systemd (socket activation): `LISTEN_FDS` sockets from descriptor 3, for the process whose
///   id is `LISTEN_PID` (sd_listen_fds(3));
/// - by an l4lb upgrading itself (SIGUSR2): `L4LB_LISTEN_FDS`, a comma-separated list of descriptors.
///
/// The sockets keep their accept queues across the hand-over: clients that connect meanwhile wait in
/// the kernel, and the process that takes over accepts them.
public enum InheritedListeners {
    public static let upgradeVariable = "L4LB_LISTEN_FDS"

    /// The sockets named by the environment, checked (each must be a listening stream socket);
    /// throws a one-line error for anything else. The variables are removed, so that a process
    /// this one starts does not claim the same sockets.
    public static func fromEnvironment() throws(L4LBError) -> [InheritedListener] {
        let environment = ProcessInfo.processInfo.environment
        var descriptors: [Int32] = []
        if let text = environment[Self.upgradeVariable] {
            for item in text.split(separator: ",") {
                guard let fd = Int32(item), fd >= 0 else {
                    throw L4LBError(.invalidValue, "\(Self.upgradeVariable): '\(item)' is not a descriptor")
                }
                descriptors.append(fd)
            }
        } else if let count = environment["LISTEN_FDS"], environment["LISTEN_PID"] == "\(getpid())" {
            guard let number = Int32(count), (0...1024).contains(number) else {
                throw L4LBError(.invalidValue, "LISTEN_FDS: '\(count)' is not a number of sockets")
            }
            descriptors = (0..<number).map { 3 + $0 }
        }
        for name in [Self.upgradeVariable, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] { unsetenv(name) }
        var listeners: [InheritedListener] = []
        for fd in descriptors {
            listeners.append(try Self.inspect(fd))
        }
        return listeners
    }

    /// `fd` as a listener: a TCP socket that listens, made non-blocking and close-on-exec.
    static func inspect(_ fd: Int32) throws(L4LBError) -> InheritedListener {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0, value == 1 else {
            throw L4LBError(.invalidValue, "inherited descriptor \(fd) is not a listening socket")
        }
        var local = RawSocketAddress()
        local.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutablePointer(to: &local.storage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &local.length) }
        }
        guard local.family == AF_INET || local.family == AF_INET6 else {
            throw L4LBError(.invalidValue, "inherited descriptor \(fd) is not a TCP socket")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return InheritedListener(fd: fd, local: local)
    }
}

extension RawSocketAddress {
    /// Same family and address, any port.
    func sameHost(as other: RawSocketAddress) -> Bool {
        guard self.family == other.family else { return false }
        return withUnsafeBytes(of: self.storage) { mine in
            withUnsafeBytes(of: other.storage) { theirs in
                switch self.family {
                case AF_INET: return mine[4..<8].elementsEqual(theirs[4..<8])
                case AF_INET6: return mine[8..<24].elementsEqual(theirs[8..<24])
                default: return false
                }
            }
        }
    }

    /// Same family, address and port.
    func sameEndpoint(as other: RawSocketAddress) -> Bool {
        guard self.family == other.family else { return false }
        return withUnsafeBytes(of: self.storage) { mine in
            withUnsafeBytes(of: other.storage) { theirs in
                switch self.family {
                case AF_INET: return mine[2..<8].elementsEqual(theirs[2..<8])
                case AF_INET6:
                    return mine[2..<4].elementsEqual(theirs[2..<4]) && mine[8..<24].elementsEqual(theirs[8..<24])
                default: return false
                }
            }
        }
    }
}
