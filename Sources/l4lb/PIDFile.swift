import Foundation
import LBKit

#if canImport(Glibc)
import Glibc
#endif

/// A pid file held with an exclusive lock for the life of the process: a second l4lb pointed at the
/// same file refuses to start, and a stale file left by a crash (no lock holder) is taken over.
public final class PIDFile: Sendable {
    public let path: String
    private let fd: Int32

    /// Locks `path` and writes this process's id into it; throws a one-line error if another
    /// process holds it.
    public init(path: String) throws(L4LBError) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw L4LBError(.invalidValue, "--pid-file \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &buffer, buffer.count)
            close(fd)
            let holder = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(
                in: .whitespacesAndNewlines
            )
            throw L4LBError(
                .invalidValue,
                "--pid-file \(path) is held by another l4lb (pid \(holder.isEmpty ? "?" : holder))"
            )
        }
        let text = Array("\(getpid())\n".utf8)
        ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.path = path
        self.fd = fd
    }

    /// Removes the file and lets go of the lock.
    public func release() {
        unlink(self.path)
        close(self.fd)
    }
}
