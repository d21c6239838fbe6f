import Foundation
import LBKit

#if canImport(Glibc)
import Glibc
#endif

/// `--daemon`: l4lb starts itself again as a detached child (posix_spawn with setsid, not fork:
/// forking a process whose threads are running is unsafe), waits until the child listens, and exits.
/// The child inherits standard error until it is ready, so a start-up error still reaches the
/// operator's terminal; then it lets go of the terminal.
enum Daemon {
    static let childVariable = "L4LB_DAEMON_CHILD"
    static let readyVariable = "L4LB_READY_FD"

    /// Whether this process is the detached child.
    static var isChild: Bool { ProcessInfo.processInfo.environment[Self.childVariable] == "1" }

    /// Starts the child and waits for it to be ready; returns the exit status for this process.
    static func detach() -> Int32 {
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else {
            return Self.fail("cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        let (readEnd, writeEnd) = (pipeEnds[0], pipeEnds[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)

        // The child must inherit nothing but standard input/output/error and the ready pipe (as its
        // descriptor 3): an inherited descriptor (a supervisor's pipe, a socket) would tie the daemon
        // to this process.
        let handOver = DescriptorHandOver(passing: [writeEnd])

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0)
        let planned = handOver.addActions(to: &actions)
        guard planned == 0 else {
            return Self.fail("cannot pass the ready pipe to the daemon: \(String(cString: strerror(planned)))")
        }

        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let arguments = [executable] + CommandLine.arguments.dropFirst()
        var environment = ProcessInfo.processInfo.environment
        environment[Self.childVariable] = "1"
        environment[Self.readyVariable] = "\(handOver.childDescriptor(at: 0))"
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv + envp { free(pointer) }
        }
        var pid: pid_t = 0
        // The child leads a session of its own, detached from the terminal.
        let status = SpawnAttributes.withClean(flags: SpawnAttributes.newSession) {
            posix_spawn(&pid, executable, &actions, &$0, argv, envp)
        }
        close(writeEnd)
        guard status == 0 else { return Self.fail("cannot start the daemon: \(String(cString: strerror(status)))") }

        // The child writes one byte once it listens; EOF first means it failed (and said why).
        var pollDescriptor = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        var byte: UInt8 = 0
        let ready = poll(&pollDescriptor, 1, 60_000) > 0 && read(readEnd, &byte, 1) == 1
        close(readEnd)
        if ready {
            print("l4lb running in the background, pid \(pid)")
            return 0
        }
        var childStatus: Int32 = 0
        waitpid(pid, &childStatus, WNOHANG)
        return 1
    }

    /// In the child, once it listens: tell the parent, then let go of the terminal.
    static func signalReady() {
        guard Self.isChild, let text = ProcessInfo.processInfo.environment[Self.readyVariable], let fd = Int32(text)
        else { return }
        // Used once: a process this one starts later (a live upgrade) must not write to that number.
        unsetenv(Self.readyVariable)
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
        close(fd)
        let null = open("/dev/null", O_WRONLY)
        if null >= 0 {
            dup2(null, STDERR_FILENO)
            close(null)
        }
    }

    private static func fail(_ message: String) -> Int32 {
        FileHandle.standardError.write(Data("l4lb: error: \(message)\n".utf8))
        return 1
    }
}
