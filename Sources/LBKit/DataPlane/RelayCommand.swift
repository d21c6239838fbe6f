/// What another thread asks of a relay loop (`RelayLoop.post`), done on the loop's thread.
enum RelayCommand {
    /// A slot freed somewhere while this loop's listeners were paused at `--max-connections`.
    case resumeAccepting
    case stopAccepting
    /// Close every open connection (the drain timeout passed).
    case closeAll
    /// Close everything and end the thread.
    case stop
    /// Start watching `add`, stop watching the listeners on `remove` (a reload changed
    /// --listen); then tell `release`, which closes the removed sockets once every loop is done.
    case changeListeners(add: [RelayListener], remove: [RawSocketAddress], release: ListenerRelease)
    /// Serve a client another loop accepted (`AcceptBalance`), on a listener for `local`.
    case adoptClient(fd: Int32, peer: RawSocketAddress, local: RelayListener)
}

/// A listening socket as a relay loop watches it.
struct RelayListener {
    var fd: Int32
    var local: RawSocketAddress
    /// Bound to 0.0.0.0 or ::, so a client's local address must be asked for (PROXY headers only).
    var wildcard: Bool
    /// One socket watched by every loop (closed by the last loop to stop), or this loop's own
    /// SO_REUSEPORT socket (closed by this loop).
    var shared: Bool
}

/// A relay loop as other threads reach it: by posting it a command.
protocol RelayCommandTarget: AnyObject, Sendable {
    /// Queues `command` and wakes the loop; false, doing nothing, once the loop has ended (its
    /// wake-up descriptor is closed and its number may belong to another file by now).
    @discardableResult
    func post(_ command: RelayCommand) -> Bool
}
