#if canImport(Glibc)
import Glibc
#endif

/// posix_spawn attributes for a child that starts clean: no signal blocked and every signal at its
/// default action. A child inherits its spawner's signal mask and the signals its parent ignores:
/// dispatch threads block every signal, so a new l4lb started from one would never see SIGTERM,
/// and this process ignores SIGPIPE and, during an upgrade, SIGUSR2.
public enum SpawnAttributes {
    /// POSIX_SPAWN_SETPGROUP: the child leads a process group of its own (glibc's value; Swift's
    /// Glibc module does not export it).
    public static let newProcessGroup: Int16 = 0x02
    /// POSIX_SPAWN_SETSID (glibc 2.26+): the child leads a session of its own.
    public static let newSession: Int16 = 0x80
    /// POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK.
    private static let cleanSignals: Int16 = 0x04 | 0x08

    /// Calls `body` with attributes for a clean child, plus `flags` (`newProcessGroup`, `newSession`).
    public static func withClean<Result>(
        flags: Int16 = 0,
        _ body: (inout posix_spawnattr_t) throws -> Result
    ) rethrows -> Result {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        if flags & Self.newProcessGroup != 0 { posix_spawnattr_setpgroup(&attributes, 0) }
        posix_spawnattr_setflags(&attributes, Self.cleanSignals | flags)
        return try body(&attributes)
    }
}
