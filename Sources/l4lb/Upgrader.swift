import Atomics
import Dispatch
import Foundation
import LBKit
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Live binary upgrade, as nginx does on SIGUSR2 (and HAProxy with `-x`): the running l4lb starts
/// the binary at its own path again, with the same arguments, and hands it its listening sockets
/// (inherited descriptors, `L4LB_LISTEN_FDS`) and its pid file (the locked descriptor,
/// `L4LB_PID_FILE_FD`). The new process listens on the very same sockets, so no client is refused:
/// whoever connects meanwhile waits in the kernel's accept queue. Once it reports ready (a byte on
/// `L4LB_UPGRADE_READY_FD`), the old process stops accepting, lets its connections finish within
/// `--drain-timeout`, and exits. If the new binary exits, or is not ready within
/// `--upgrade-timeout`, the old process keeps serving and says why.
final class Upgrader: Sendable {
    static let readyVariable = "L4LB_UPGRADE_READY_FD"
    static let pidFileVariable = "L4LB_PID_FILE_FD"

    private let application: Application
    private let executable: String
    private let arguments: [String]
    private let pidFile: PIDFile?
    private let timeout: Duration
    private let onReady: @Sendable (pid_t) -> Void
    private let inProgress = ManagedAtomic(false)
    private let done = ManagedAtomic(false)
    private let queue = DispatchQueue(label: "l4lb-upgrade")

    /// - Parameters:
    ///   - executable: the binary to start, as this process was started (where a package upgrade
    ///     puts the new one).
    ///   - onReady: called with the new process's id once it serves; starts this one's drain.
    init(
        application: Application,
        executable: String,
        arguments: [String],
        pidFile: PIDFile?,
        timeout: Duration,
        onReady: @escaping @Sendable (pid_t) -> Void
    ) {
        self.application = application
        self.executable = executable
        self.arguments = arguments
        self.pidFile = pidFile
        self.timeout = timeout
        self.onReady = onReady
    }

    /// Whether a new process has taken over (this one is draining).
    var handedOver: Bool { self.done.load(ordering: .relaxed) }

    func installSIGUSR2() -> any DispatchSourceSignal {
        signal(SIGUSR2, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGUSR2, queue: DispatchQueue(label: "l4lb-usr2"))
        source.setEventHandler { [self] in self.begin() }
        source.resume()
        return source
    }

    /// Starts an upgrade unless one is under way or done.
    func begin() {
        let logger = self.application.logger
        guard !self.done.load(ordering: .relaxed) else {
            logger.warning("upgrade: this process has already handed over; signal ignored")
            return
        }
        guard self.inProgress.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else {
            logger.warning("upgrade: one is already under way; signal ignored")
            return
        }
        self.queue.async { [self] in
            defer { self.inProgress.store(false, ordering: .relaxed) }
            switch self.run() {
            case .success(let pid):
                self.done.store(true, ordering: .relaxed)
                self.pidFile?.handOver()
                logger.info(
                    "upgrade: the new process serves; this one stops accepting and drains",
                    metadata: ["new-pid": "\(pid)"]
                )
                self.onReady(pid)
            case .failure(let reason):
                logger.error("upgrade failed; still serving", metadata: ["reason": "\(reason.message)"])
            }
        }
    }

    private func run() -> Result<pid_t, L4LBError> {
        let sockets = self.application.proxy.listeningSockets.map(\.fd)
        guard !sockets.isEmpty else { return .failure(L4LBError(.invalidValue, "no listening socket to hand over")) }
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else {
            return .failure(L4LBError(.invalidValue, "cannot create a pipe: \(String(cString: strerror(errno)))"))
        }
        let (readEnd, writeEnd) = (ends[0], ends[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        defer { close(readEnd) }

        // Only the sockets, the pid file and the ready pipe go to the new process, as 3, 4, ...: not
        // Redis connections, not clients' or the admin endpoint's sockets (one carried into the
        // child would outlive its connection here).
        let kept = self.pidFile.map { [$0.descriptor] } ?? []
        let handOver = DescriptorHandOver(passing: sockets + kept + [writeEnd])
        var environment = ProcessInfo.processInfo.environment
        // Descriptor numbers meant for this process alone (the daemon's start-up pipe) are not passed on.
        environment[Daemon.readyVariable] = nil
        environment[InheritedListeners.upgradeVariable] =
            sockets.indices.map { "\(handOver.childDescriptor(at: $0))" }.joined(separator: ",")
        if self.pidFile != nil {
            environment[Self.pidFileVariable] = "\(handOver.childDescriptor(at: sockets.count))"
        }
        environment[Self.readyVariable] = "\(handOver.childDescriptor(at: sockets.count + kept.count))"
        // A daemon's new process is already detached: it must not detach again.
        if self.application.settings.operations.daemon { environment[Daemon.childVariable] = "1" }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let planned = handOver.addActions(to: &actions)
        guard planned == 0 else {
            close(writeEnd)
            return .failure(
                L4LBError(
                    .invalidValue,
                    "cannot pass descriptors to the new binary: \(String(cString: strerror(planned)))"
                )
            )
        }
        // This runs on a dispatch thread, which blocks every signal: the child starts clean, or SIGTERM
        // would never reach it.
        let argv = ([self.executable] + self.arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let spawned = SpawnAttributes.withClean { posix_spawn(&pid, self.executable, &actions, &$0, argv, envp) }
        close(writeEnd)
        guard spawned == 0 else {
            return .failure(
                L4LBError(.invalidValue, "cannot start \(self.executable): \(String(cString: strerror(spawned)))")
            )
        }
        self.application.logger.info(
            "upgrade: started the new binary",
            metadata: ["pid": "\(pid)", "binary": "\(self.executable)"]
        )

        // One byte once it listens; EOF first means it exited.
        let (seconds, attoseconds) = self.timeout.components
        let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
        var descriptor = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        let polled = poll(&descriptor, 1, milliseconds)
        var byte: UInt8 = 0
        if polled > 0, read(readEnd, &byte, 1) == 1 { return .success(pid) }
        if polled > 0 {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            return .failure(
                L4LBError(.invalidValue, "the new binary exited before it was ready (\(Self.describe(status)))")
            )
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return .failure(L4LBError(.invalidValue, "the new binary was not ready within \(self.timeout); it was stopped"))
    }

    private static func describe(_ status: Int32) -> String {
        let signal = status & 0x7F
        return signal == 0 ? "exit status \((status >> 8) & 0xFF)" : "killed by signal \(signal)"
    }

    /// In a process started by an upgrade: tell the old one that this one serves.
    static func signalReady() {
        guard let text = ProcessInfo.processInfo.environment[Self.readyVariable], let fd = Int32(text) else { return }
        unsetenv(Self.readyVariable)
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
        close(fd)
    }
}
