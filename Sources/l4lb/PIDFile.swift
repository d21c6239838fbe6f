import Atomics
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
    /// Set once a new process took the file over (a live upgrade): then it is not removed at exit.
    private let handedOver = ManagedAtomic(false)
    /// Whether the file holds this process's id: an adopted file is the old process's until this
    /// one is ready, and a process that fails before then leaves it in place at exit.
    private let claimed = ManagedAtomic(false)

    /// The locked descriptor, which an upgrade hands to the new process: the lock goes with it.
    var descriptor: Int32 { self.fd }

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
        self.path = path
        self.fd = fd
        self.claim()
    }

    /// Takes over the pid file an upgrading l4lb handed over (its locked descriptor, `fd`). The lock
    /// is the same: it passes from the old process to this one without a moment when a third could
    /// take it. The file keeps the old process's id until this one is ready (`claim`): whoever reads
    /// it meanwhile signals the process that serves, and if this one fails to start, the file
    /// still names the process that goes on serving.
    public init(adopting fd: Int32, path: String) throws(L4LBError) {
        var handed = stat()
        var named = stat()
        guard fstat(fd, &handed) == 0, stat(path, &named) == 0, handed.st_ino == named.st_ino,
            handed.st_dev == named.st_dev
        else {
            throw L4LBError(.invalidValue, "--pid-file \(path): the descriptor handed over is not this file")
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        self.path = path
        self.fd = fd
    }

    /// Writes this process's id into the file: for an adopted file, once this process is ready.
    func claim() {
        let text = Array("\(getpid())\n".utf8)
        ftruncate(self.fd, 0)
        _ = text.withUnsafeBytes { pwrite(self.fd, $0.baseAddress, $0.count, 0) }
        self.claimed.store(true, ordering: .relaxed)
    }

    /// A new process owns the file now: keep it at exit.
    func handOver() {
        self.handedOver.store(true, ordering: .relaxed)
    }

    /// Removes the file (unless handed over, or never this process's) and lets go of this
    /// process's hold on the lock.
    public func release() {
        if self.claimed.load(ordering: .relaxed) && !self.handedOver.load(ordering: .relaxed) { unlink(self.path) }
        close(self.fd)
    }
}
