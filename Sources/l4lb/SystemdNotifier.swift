import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Talks to systemd through `$NOTIFY_SOCKET` (sd_notify's protocol, without libsystemd): READY=1
/// once l4lb listens, STOPPING=1 when it starts draining, WATCHDOG=1 while it is alive when the
/// unit sets `WatchdogSec`.
public struct SystemdNotifier: Sendable {
    public let socketPath: String
    /// How often to send WATCHDOG=1 (half of WATCHDOG_USEC), when the watchdog is on for this process.
    public let watchdogInterval: TimeAmount?

    /// The notifier systemd asked for, or nil when l4lb was not started by systemd with notify.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> SystemdNotifier? {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return nil }
        var interval: TimeAmount?
        if let text = environment["WATCHDOG_USEC"], let microseconds = Int64(text), microseconds > 0 {
            let pid = environment["WATCHDOG_PID"].flatMap { Int32($0) }
            if pid == nil || pid == getpid() {
                interval = .microseconds(microseconds / 2)
            }
        }
        return SystemdNotifier(socketPath: path, watchdogInterval: interval)
    }

    /// Sends `state` (for example "READY=1") as one datagram; errors are ignored, as sd_notify does.
    public func notify(_ state: String) {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(self.socketPath.utf8)
        // "@name" is Linux's abstract namespace: a leading NUL byte, and no terminator.
        let isAbstract = path.first == UInt8(ascii: "@")
        if isAbstract { path[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        let length = MemoryLayout<sa_family_t>.size + path.count + (isAbstract ? 0 : 1)
        let message = Array(state.utf8)
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                message.withUnsafeBytes { bytes in
                    sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), socketAddress, socklen_t(length))
                }
            }
        }
    }
}
