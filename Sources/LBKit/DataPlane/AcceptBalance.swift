/// Which relay thread serves a client just accepted: the rule that keeps threads evenly loaded.
///
/// The kernel decides which thread accepts. With a listening socket per thread (SO_REUSEPORT) it
/// hashes each client's addresses, and a few dozen long-lived clients split unevenly by chance; with
/// one socket shared by every thread (`--max-connections`, sockets from systemd or from a live
/// upgrade) EPOLLEXCLUSIVE tends to wake the same thread, which then takes nearly every client. A
/// keep-alive load then runs on one core while the other waits. So the thread that accepted hands
/// the client to the least-loaded thread when it holds clearly more than that one (HAProxy's
/// multi-queue accept does the same). The margin keeps hand-overs rare once loads are even: each
/// costs a wake-up of the other thread.
enum AcceptBalance {
    /// Whether the accepting thread hands the client over, given the connections it serves now and
    /// those of the least-loaded other thread (counting clients already handed to it).
    static func handsOver(own: Int, least: Int) -> Bool {
        // At least two apart, and an eighth of the smaller load apart once loads are large.
        own >= least + 2 + least / 8
    }
}
