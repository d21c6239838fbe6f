/// One proxied connection's state in a relay loop's slab: plain values in a preallocated array, so
/// a new connection allocates no object and takes no reference count beyond the backend it uses.
/// Confined to its loop's thread. Not copyable: it owns its queues' buffers.
struct RelaySlot: ~Copyable {
    /// Bumped each time the slot is freed, so that work put off for the previous connection in this
    /// slot (a client FIN, a queued event) is recognized and skipped.
    var generation: UInt32 = 1
    /// The epoll registration of each socket (`RelayToken`): an event whose id is not the socket's
    /// current one was queued for a socket closed since (an earlier one of a retried backend, or of
    /// a previous connection in the slot) and is dropped. A slot's generation is not enough: a retry
    /// registers a new backend socket within one generation.
    var clientRegistration: UInt32 = 0
    var backendRegistration: UInt32 = 0
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
