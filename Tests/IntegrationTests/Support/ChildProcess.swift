import CLinux
import Foundation
import LBKit
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// A child process of the test process that inherits standard input, output and error as given and
/// no other descriptor. Every test that starts a process starts it here.
///
/// Foundation's `Process` was not enough. On Linux it closes, in the child, the descriptors open
/// when it looks (3 up to the highest), and a descriptor another thread opens between that look
/// and the spawn goes along. SwiftNIO opens its sockets without close-on-exec, and the suite runs
/// many tests at once, so it happened:
/// - a `swift build` child held pipes of the test process (seen in /proc);
/// - a redis-server held a socket of the test process;
/// - `Process` makes a socket pair per child and learns that the child exited when the pair's other
///   end closes. That end, carried into a long-lived child (another test's redis-server), never
///   closes, so `waitUntilExit` never returns: a CI run hung until its 90-minute limit, with eleven
///   redis-servers still up;
/// - a live-upgrade test saw an old l4lb never finish draining: the connection it waited for was
///   closed by the test, but a copy lived on in another child.
///
/// Here the child closes every descriptor from 3 up itself (posix_spawn's closefrom action), so
/// nothing opened by any thread at any moment goes along; its exit is awaited on a pidfd.
final class ChildProcess: @unchecked Sendable {
    /// Where the child's standard output or error goes.
    enum Output {
        /// The test process's own (the test log).
        case inherit
        case null
        /// A descriptor of the test process, such as a pipe's write end.
        case descriptor(Int32)
    }

    let pid: pid_t
    /// Polls readable once the child has exited; -1 on kernels without pidfd_open (before 5.3).
    private let pidfd: Int32
    /// The wait status, once the child has been reaped.
    private let reaped = NIOLockedValueBox<Int32?>(nil)

    /// Starts `executable` with `arguments`; `environment` replaces this process's environment
    /// when given.
    init(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String]? = nil,
        directory: String? = nil,
        standardOutput: Output = .inherit,
        standardError: Output = .inherit
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        for (output, target) in [(standardOutput, STDOUT_FILENO), (standardError, STDERR_FILENO)] {
            switch output {
            case .inherit: break
            case .null: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
            case .descriptor(let fd): posix_spawn_file_actions_adddup2(&actions, fd, target)
            }
        }
        l4lb_spawn_close_from(&actions, 3)
        if let directory { l4lb_spawn_chdir(&actions, directory) }

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let variables = environment ?? ProcessInfo.processInfo.environment
        let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        // Its own process group (a terminal's ^C is for the test run, not for its redis-servers),
        // signals clean: the spawning thread may block some, and this process ignores SIGPIPE.
        let status = SpawnAttributes.withClean(flags: SpawnAttributes.newProcessGroup) {
            posix_spawn(&pid, executable, &actions, &$0, argv, envp)
        }
        guard status == 0 else {
            throw TestFailure("cannot start \(executable): \(String(cString: strerror(status)))")
        }
        self.pid = pid
        self.pidfd = l4lb_pidfd_open(pid)
        if self.pidfd >= 0 { _ = fcntl(self.pidfd, F_SETFD, FD_CLOEXEC) }
    }

    deinit {
        if self.pidfd >= 0 { close(self.pidfd) }
    }

    /// Runs `executable` to its end: its exit status (-1 if it outlived `timeoutSeconds`) and what it
    /// printed to standard output, and to standard error too with `mergingErrors` (else that goes
    /// nowhere).
    static func run(
        _ executable: String,
        _ arguments: [String],
        directory: String? = nil,
        mergingErrors: Bool,
        timeoutSeconds: Double = 600
    ) throws -> (status: Int32, output: String) {
        let (read, write) = try Self.pipe()
        let reader = FileHandle(fileDescriptor: read, closeOnDealloc: true)
        let child: ChildProcess
        do {
            defer { close(write) }
            child = try ChildProcess(
                executable,
                arguments,
                directory: directory,
                standardOutput: .descriptor(write),
                standardError: mergingErrors ? .descriptor(write) : .null
            )
        }
        // Ends when the child, and whatever it started, have closed the pipe: nothing else has it.
        let data = reader.readDataToEndOfFile()
        child.waitUntilExit(timeoutSeconds: timeoutSeconds)
        return (child.exitStatus ?? -1, String(decoding: data, as: UTF8.self))
    }

    /// A pipe whose ends are close-on-exec (a child gets the write end by dup2, which drops that).
    static func pipe() throws -> (read: Int32, write: Int32) {
        var ends: [Int32] = [0, 0]
        guard Glibc.pipe(&ends) == 0 else { throw TestFailure("pipe: \(String(cString: strerror(errno)))") }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return (ends[0], ends[1])
    }

    var isRunning: Bool { self.reap() == nil }

    /// Waits until the child has exited, at most `timeoutSeconds`; false if it still runs then.
    @discardableResult
    func waitUntilExit(timeoutSeconds: Double = 60) -> Bool {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while self.isRunning {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            if self.pidfd >= 0 {
                var descriptor = pollfd(fd: self.pidfd, events: Int16(POLLIN), revents: 0)
                _ = poll(&descriptor, 1, Int32(min(left, 60) * 1000) + 1)
            } else {
                // A kernel without pidfd announces nothing to poll: look again in 10 ms.
                usleep(10_000)
            }
        }
        return true
    }

    /// Sends `signal` to the child, unless it has been reaped (its PID may belong to another by then).
    func send(_ signal: Int32) {
        if self.isRunning { kill(self.pid, signal) }
    }

    /// The exit status, or the signal that ended it as 128 + its number, as a shell says; nil while
    /// it runs.
    var exitStatus: Int32? {
        guard let status = self.reap() else { return nil }
        return Self.exited(status) ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// "running", "exit status N" or "killed by signal N", for a failing expectation's message.
    var ending: String {
        guard let status = self.reap() else { return "running" }
        return Self.exited(status) ? "exit status \((status >> 8) & 0xff)" : "killed by signal \(status & 0x7f)"
    }

    private static func exited(_ status: Int32) -> Bool { status & 0x7f == 0 }

    /// The wait status once the child has exited (reaping it the first time), else nil.
    private func reap() -> Int32? {
        self.reaped.withLockedValue { reaped in
            if let reaped { return reaped }
            var status: Int32 = 0
            var result: pid_t
            repeat {
                result = waitpid(self.pid, &status, WNOHANG)
            } while result < 0 && errno == EINTR
            guard result == self.pid else { return nil }
            reaped = status
            return status
        }
    }
}
