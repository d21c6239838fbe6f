/// One proxied connection's state in a relay loop's slab: plain values in a preallocated array, so
/// a new connection allocates no object and takes no reference count beyond the backend it uses.
/// Confined to its loop's thread.
struct RelaySlot {
    /// Bumped each time the slot is freed, so that an epoll event queued for the previous
    /// connection in this slot is recognized and ignored.
    var generation: UInt32 = 1
    var inUse = false
    var clientFD: Int32 = -1
    var backendFD: Int32 = -1
    var machine: RelayMachine
    var client = ClientAddress.unspecified
    /// The listener the client came in on.
    var listener = 0
    /// The routing table of the first pick: every retry's exclusions are indices into its pool.
    var table: RoutingTable?
    var backend: Backend?
    var backendIndex = -1
    var excluded = BackendExclusions()
    /// Backends actually tried (connects started), for the access log's `retries`.
    var backendsTried = 0
    var toBackend = ByteQueue()
    var toClient = ByteQueue()
    /// epoll reported input on the side and the loop has not read it to the end yet.
    var clientReadable = false
    var backendReadable = false
    /// The side's FIN has arrived (EPOLLRDHUP): a short read is its last.
    var clientFinArrived = false
    var backendFinArrived = false
    var bytesFromClient: UInt64 = 0
    var bytesFromBackend: UInt64 = 0
    /// Monotonic nanoseconds at accept.
    var acceptedAt: UInt64 = 0

    init(settings: RelayMachine.Settings) {
        self.machine = RelayMachine(settings: settings)
    }
}
