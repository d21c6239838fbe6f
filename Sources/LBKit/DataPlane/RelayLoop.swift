import Atomics
import CLinux
import Foundation
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// One relay thread: an edge-triggered epoll loop that accepts clients from the listening sockets
/// it shares with the other relay threads, connects them to backends and relays their bytes, with every connection's state in a
/// slab of `RelaySlot`s. The decisions are `RelayMachine`'s; this type only does the system calls.
///
/// What a connection costs it, by design (HAProxy's connection layer is the model):
/// - each socket is added to epoll once, for both directions, and leaves it by `close`;
/// - addresses come from `accept4` and the pre-resolved backend, and are never asked for;
/// - accepted sockets inherit TCP_NODELAY from the listener;
/// - timers are lists in the slab (`DeadlineLists`), not kernel timers;
/// - bytes go through one per-thread buffer and are copied only when a peer cannot take them.
///
/// Threading: everything but `post` runs on the loop's thread.
final class RelayLoop: @unchecked Sendable {
    enum Command {
        /// A slot freed somewhere while this loop's listeners were paused at `--max-connections`.
        case resumeAccepting
        case stopAccepting
        /// Close every open connection (the drain timeout passed).
        case closeAll
        /// Close everything and end the thread.
        case stop
        /// Start watching `add`, stop watching the listeners on `remove` (a reload changed
        /// --listen); then tell `release`, which closes the removed sockets once every loop is done.
        case changeListeners(add: [Listener], remove: [RawSocketAddress], release: ListenerRelease)
        /// Serve a client another loop accepted (`AcceptBalance`), on a listener for `local`.
        case adoptClient(fd: Int32, peer: RawSocketAddress, local: Listener)
    }

    struct Listener {
        var fd: Int32
        var local: RawSocketAddress
        /// Bound to 0.0.0.0 or ::, so a client's local address must be asked for (PROXY headers only).
        var wildcard: Bool
        /// One socket watched by every loop (closed by the last loop to stop), or this loop's own
        /// SO_REUSEPORT socket (closed by this loop).
        var shared: Bool
    }

    /// epoll tokens: a connection's is its slot, side and generation; these two are reserved.
    enum Token {
        static let wake = UInt64.max
        static let listenerTag: UInt64 = 0xFFFF_FFFE_0000_0000
        static let backendBit: UInt64 = 1 << 31
        static let maximumGeneration: UInt32 = 0xFFFF_FFFD

        static func listener(_ index: Int) -> UInt64 { Self.listenerTag | UInt64(index) }

        static func connection(slot: Int, side: RelayMachine.Side, generation: UInt32) -> UInt64 {
            UInt64(generation) << 32 | (side == .backend ? Self.backendBit : 0) | UInt64(slot)
        }
    }

    let shared: RelayShared
    let name: String
    /// The one CPU this loop's thread runs on (`--relay-cpus`), or nil for any.
    private let cpu: Int?
    /// The scheduler slice this loop's thread asks for (`--relay-slice`), or nil for the kernel's.
    private let slice: SchedulerSlice?
    private let epoll: Int32
    private let wake: Int32
    var listeners: [Listener] = []
    private var listenersArmed = true
    /// Set once this loop has stopped accepting for good (it tells RelayShared once).
    private var stoppedAccepting = false
    /// Set while the listeners are off because descriptors ran out: when to try again.
    private var acceptRetryAt: UInt64?
    var slots: [RelaySlot] = []
    private var freeSlots: [Int32] = []
    var deadlines: DeadlineLists
    /// The loop's one read buffer.
    let scratch: UnsafeMutableRawPointer
    static let scratchSize = 64 * 1024
    private static let maximumEvents: Int32 = 256
    /// Clients accepted per listener event before the loop turns to other work. Small, as HAProxy's
    /// tune.maxaccept (4): each accepted client's backend connect completes within the call on
    /// loopback, and its request can only follow once this turn of the loop is over. With 64 a
    /// turn, the backend held each new connection idle about 2 ms (median) before the request came.
    static let acceptBatch = 4
    private let events: UnsafeMutablePointer<epoll_event>
    private let commands = NIOLockedValueBox<[Command]>([])
    private var running = true
    /// Monotonic nanoseconds, read once per loop iteration (vDSO: no system call).
    var now: UInt64 = 0
    private let exited = ConditionLock(value: 0)
    /// Clients this loop serves, counting those handed to it and not yet adopted: what the loops
    /// compare to balance (`AcceptBalance`). Changed by this loop, and by a loop handing it a client.
    let load = ManagedAtomic<Int>(0)
    /// The other loops of the server; set before `start`, emptied when the thread ends.
    var siblings: [RelayLoop] = []
    /// Client FINs to pass on (a write shutdown of the client socket), put off by one turn of the
    /// loop: see `deferClientShutdown`.
    var clientShutdowns = ClientShutdowns()

    init(name: String, cpu: Int? = nil, shared: RelayShared, configuration: ProxyConfiguration) throws(L4LBError) {
        self.name = name
        self.cpu = cpu
        self.slice = configuration.relaySlice
        self.shared = shared
        self.epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        self.wake = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard self.epoll >= 0, self.wake >= 0 else {
            throw L4LBError(.bindFailed, "cannot create the relay's event loop: \(SocketCalls.describe(errno))")
        }
        self.deadlines = DeadlineLists(
            proxyHeader: configuration.acceptProxyProtocol.map { UInt64(max(0, $0.nanoseconds)) },
            connect: UInt64(max(0, configuration.connectTimeout.nanoseconds)),
            idle: configuration.idleTimeout.map { UInt64(max(0, $0.nanoseconds)) }
        )
        self.scratch = UnsafeMutableRawPointer.allocate(byteCount: Self.scratchSize, alignment: 16)
        self.events = UnsafeMutablePointer<epoll_event>.allocate(capacity: Int(Self.maximumEvents))
        self.register(self.wake, token: Token.wake, events: EPOLLIN.rawValue)
        self.growSlab(to: 64)
    }

    deinit {
        self.scratch.deallocate()
        self.events.deallocate()
    }

    /// Adds a bound listening socket; before `start` only.
    ///
    /// A shared listener is watched by every loop, level-triggered and with EPOLLEXCLUSIVE (one
    /// waiting loop is woken per new client, not all); an own one by this loop alone.
    func adopt(listener: Listener) {
        self.listeners.append(listener)
        self.watch(listener: self.listeners.count - 1, true)
    }

    private func watch(listener index: Int, _ watched: Bool) {
        let fd = self.listeners[index].fd
        guard fd >= 0 else { return }
        var event = epoll_event()
        // EPOLLEXCLUSIVE cannot be modified, only added and deleted.
        let exclusive = self.listeners[index].shared ? EPOLLEXCLUSIVE.rawValue : 0
        l4lb_epoll_event_set(&event, EPOLLIN.rawValue | exclusive, Token.listener(index))
        epoll_ctl(self.epoll, watched ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &event)
    }

    func start() {
        Thread { [self] in
            // Named from inside, through the kernel: Foundation's `Thread.name`, set before `start`,
            // never reached it, and a new Linux thread keeps its creator's name. `top -H`, `ps -L` and
            // perf showed every relay thread as a Dispatch worker ("oot.default-qos").
            l4lb_name_current_thread(self.name)
            self.takeSchedulingSettings()
            self.run()
        }.start()
    }

    /// On the new thread, before its loop runs: its CPU, nice value and slice, each as configured;
    /// one the kernel refuses is a warning, not a stop.
    private func takeSchedulingSettings() {
        if let cpu = self.cpu, let refusal = ThreadScheduling.pinCurrentThread(to: cpu) {
            // Checked at start against the CPUs allowed; one taken away since (a cgroup change)
            // leaves the thread unpinned, not the proxy down.
            self.shared.logger.warning(
                "relay thread not pinned",
                metadata: ["thread": "\(self.name)", "cpu": "\(cpu)", "error": "\(refusal)"]
            )
        }
        // Started from a Dispatch worker, the thread has the worker's nice value, not the one an
        // operator gave l4lb (`nice`, systemd's Nice=) for its data plane.
        if let refusal = ThreadScheduling.takeProcessNice() {
            self.shared.logger.warning(
                "relay thread keeps its nice value, not the process's",
                metadata: ["thread": "\(self.name)", "error": "\(refusal)"]
            )
        }
        if let slice = self.slice,
            let refusal = ThreadScheduling.setCurrentThreadSlice(slice)
        {
            // A seccomp profile may forbid sched_setattr: the thread runs with the kernel's slice.
            self.shared.logger.warning(
                "relay thread keeps the kernel's scheduler slice",
                metadata: ["thread": "\(self.name)", "slice": "\(slice)", "error": "\(refusal)"]
            )
        }
    }

    /// Gives up a loop whose thread never started (another address failed to bind).
    func closeBeforeStart() {
        close(self.epoll)
        close(self.wake)
    }

    /// Asks the loop to do `command` on its thread.
    func post(_ command: Command) {
        self.commands.withLockedValue { $0.append(command) }
        var one: UInt64 = 1
        _ = write(self.wake, &one, 8)
    }

    /// Blocks until the thread has ended after `.stop`.
    func waitUntilExited() {
        self.exited.lock(whenValue: 1)
        self.exited.unlock()
    }

    private func run() {
        self.now = Self.monotonicNow()
        while self.running {
            // A FIN put off waits for one more look at the sockets, not for the next event.
            let wait = self.clientShutdowns.isEmpty ? self.waitMilliseconds() : 0
            let count = epoll_wait(self.epoll, self.events, Self.maximumEvents, wait)
            self.now = Self.monotonicNow()
            if count < 0 {
                if errno == EINTR { continue }
                self.shared.logger.critical("epoll_wait failed", metadata: ["error": "\(SocketCalls.describe(errno))"])
                break
            }
            for index in 0..<Int(count) {
                let event = self.events + index
                self.dispatch(token: l4lb_epoll_event_token(event), events: l4lb_epoll_event_events(event))
            }
            self.passOnClientShutdowns()
            self.expireTimers()
        }
        self.closeListeners()
        for index in self.slots.indices where self.slots[index].inUse {
            self.handle(.closeRequested(unacknowledged: self.hasUnacknowledgedBytes(slot: index)), slot: index)
        }
        close(self.epoll)
        close(self.wake)
        self.siblings = []
        self.exited.lock()
        self.exited.unlock(withValue: 1)
    }

    private func waitMilliseconds() -> Int32 {
        var deadline = self.deadlines.nextDeadline
        if let retry = self.acceptRetryAt { deadline = min(deadline ?? retry, retry) }
        guard let deadline else { return -1 }
        guard deadline > self.now else { return 0 }
        // Rounded up, so that a timer is never found a hair early and waited for twice.
        return Int32(clamping: (deadline - self.now + 999_999) / 1_000_000)
    }

    private func dispatch(token: UInt64, events: UInt32) {
        if token == Token.wake {
            self.runCommands()
            return
        }
        if token & Token.listenerTag == Token.listenerTag {
            self.acceptClients(listener: Int(token & 0xFFFF_FFFF))
            return
        }
        let slot = Int(token & (Token.backendBit - 1))
        let generation = UInt32(truncatingIfNeeded: token >> 32)
        guard slot < self.slots.count, self.slots[slot].inUse, self.slots[slot].generation == generation else {
            // An event queued for a connection that closed earlier in this batch.
            return
        }
        let side: RelayMachine.Side = token & Token.backendBit != 0 ? .backend : .client
        self.socketEvent(events, side: side, slot: slot)
    }

    private func runCommands() {
        var counter: UInt64 = 0
        _ = read(self.wake, &counter, 8)
        let commands = self.commands.withLockedValue { commands in
            defer { commands = [] }
            return commands
        }
        for command in commands {
            switch command {
            case .resumeAccepting:
                self.armListeners(true)
            case .stopAccepting:
                self.closeListeners()
            case .closeAll:
                for index in self.slots.indices where self.slots[index].inUse {
                    self.handle(.closeRequested(unacknowledged: self.hasUnacknowledgedBytes(slot: index)), slot: index)
                }
            case .stop:
                self.running = false
            case .changeListeners(let add, let remove, let release):
                self.changeListeners(add: add, remove: remove)
                release.loopDone()
            case .adoptClient(let fd, let peer, let local):
                self.open(client: fd, peer: peer, listener: self.listenerIndex(for: local))
            }
        }
    }

    /// Whether either socket of `slot` holds bytes its peer has not acknowledged: asked only when a
    /// connection is closed by l4lb (a timeout, the end of a drain), never per byte.
    private func hasUnacknowledgedBytes(slot: Int) -> Bool {
        [self.slots[slot].clientFD, self.slots[slot].backendFD].contains { fd in
            fd >= 0 && l4lb_unacknowledged_bytes(fd) > 0
        }
    }

    private func expireTimers() {
        if let retry = self.acceptRetryAt, retry <= self.now {
            self.acceptRetryAt = nil
            self.armListeners(true)
        }
        while let (slot, kind) = self.deadlines.popExpired(now: self.now) {
            switch kind {
            case .proxyHeader:
                self.refuseProxyHeader(slot: slot, reason: "no PROXY protocol header in time")
            case .connect:
                self.handle(.connectTimedOut, slot: slot)
            case .idle:
                self.handle(.idleTimedOut(unacknowledged: self.hasUnacknowledgedBytes(slot: slot)), slot: slot)
            }
        }
    }
}

// MARK: - Accepting

extension RelayLoop {
    private func acceptClients(listener index: Int) {
        guard index < self.listeners.count, self.listeners[index].fd >= 0 else { return }
        let listenerFD = self.listeners[index].fd
        // Level-triggered: what is left in the queue after this batch is reported again.
        for _ in 0..<Self.acceptBatch {
            guard self.shared.reserveSlot() else {
                self.pauseAtLimit()
                return
            }
            switch SocketCalls.accept(listenerFD) {
            case .success(let (fd, peer)):
                self.shared.countAccepted()
                self.place(client: fd, peer: peer, listener: index)
            case .failure(let failure):
                self.shared.releaseSlot()
                switch failure {
                case .wouldBlock:
                    return
                case .outOfResources:
                    self.backOffAccepting()
                    return
                case .reset, .other:
                    // The client left before we took it (ECONNABORTED), or a transient error: next.
                    continue
                }
            }
        }
    }

    /// At `--max-connections`: stop accepting (clients wait in the kernel's queue) until a slot frees.
    private func pauseAtLimit() {
        self.armListeners(false)
        if self.shared.loopPaused(self) {
            self.armListeners(true)
        }
    }

    /// Out of descriptors: accepting again at once would fail again at once (and spin). Pause for a
    /// moment; clients wait in the listen queue meanwhile. Never a backend's fault.
    private func backOffAccepting() {
        self.shared.resourceLog.warning(
            self.shared.logger,
            "out of file descriptors: accepting paused for 100 ms; raise the limit (ulimit -n, LimitNOFILE)",
            metadata: ["open": "\(self.shared.activeCount)"]
        )
        self.armListeners(false)
        self.acceptRetryAt = self.now + 100_000_000
    }

    private func armListeners(_ armed: Bool) {
        guard armed != self.listenersArmed else { return }
        self.listenersArmed = armed
        for index in self.listeners.indices {
            self.watch(listener: index, armed)
        }
    }

    private func changeListeners(add: [Listener], remove: [RawSocketAddress]) {
        for index in self.listeners.indices where self.listeners[index].fd >= 0 {
            guard remove.contains(where: { self.listeners[index].local.sameEndpoint(as: $0) }) else { continue }
            if self.listenersArmed { self.watch(listener: index, false) }
            // The entry stays, for the local address of connections it accepted; ListenerRelease
            // closes the socket once no loop watches it.
            self.listeners[index].fd = -1
        }
        for listener in add {
            self.listeners.append(listener)
            if self.listenersArmed { self.watch(listener: self.listeners.count - 1, true) }
        }
    }

    /// Stops watching the listening sockets and closes this loop's own; the last loop to stop
    /// closes the shared ones, so no loop ever accepts on a closed (and perhaps reused) descriptor.
    /// The entries stay, for the local addresses of open connections.
    private func closeListeners() {
        guard !self.stoppedAccepting else { return }
        self.stoppedAccepting = true
        self.armListeners(false)
        let shared = self.listeners.filter(\.shared).map(\.fd)
        for listener in self.listeners where !listener.shared && listener.fd >= 0 { close(listener.fd) }
        for index in self.listeners.indices { self.listeners[index].fd = -1 }
        if self.shared.loopStoppedAccepting() {
            for fd in shared where fd >= 0 { close(fd) }
            self.shared.listenersClosed()
        }
    }

    /// Serves the client here, or hands it to a clearly less-loaded loop (`AcceptBalance`).
    private func place(client fd: Int32, peer: RawSocketAddress, listener: Int) {
        var least: RelayLoop?
        var leastLoad = Int.max
        for sibling in self.siblings {
            let load = sibling.load.load(ordering: .relaxed)
            if load < leastLoad { (least, leastLoad) = (sibling, load) }
        }
        if let least, AcceptBalance.handsOver(own: self.load.load(ordering: .relaxed), least: leastLoad) {
            least.load.wrappingIncrement(ordering: .relaxed)
            self.shared.countHandOver()
            least.post(.adoptClient(fd: fd, peer: peer, local: self.listeners[listener]))
            return
        }
        self.load.wrappingIncrement(ordering: .relaxed)
        self.open(client: fd, peer: peer, listener: listener)
    }

    /// The index of this loop's listener for `listener`'s address, for a client another loop
    /// accepted; an entry that is not watched is added if this loop has none (its sockets differ).
    private func listenerIndex(for listener: Listener) -> Int {
        if let index = self.listeners.firstIndex(where: { $0.local.sameEndpoint(as: listener.local) }) {
            return index
        }
        self.listeners.append(Listener(fd: -1, local: listener.local, wildcard: listener.wildcard, shared: false))
        return self.listeners.count - 1
    }

    private func open(client fd: Int32, peer: RawSocketAddress, listener: Int) {
        let slot = self.allocateSlot()
        self.slots[slot].inUse = true
        self.slots[slot].clientFD = fd
        self.slots[slot].client = ClientAddress(peer)
        self.slots[slot].listener = listener
        self.slots[slot].acceptedAt = self.now
        self.register(fd, slot: slot, side: .client)
        self.handle(.accepted, slot: slot)
    }
}

// MARK: - The slab

extension RelayLoop {
    private func allocateSlot() -> Int {
        if self.freeSlots.isEmpty {
            self.growSlab(to: max(64, self.slots.count * 2))
        }
        return Int(self.freeSlots.removeLast())
    }

    private func growSlab(to count: Int) {
        let old = self.slots.count
        guard count > old else { return }
        self.slots.reserveCapacity(count)
        for _ in old..<count {
            self.slots.append(RelaySlot(settings: self.shared.machineSettings))
        }
        self.deadlines.grow(to: count)
        // Lowest indices last, so they are taken first and the slab's hot part stays small.
        self.freeSlots.append(contentsOf: (old..<count).reversed().map { Int32($0) })
    }

    /// Returns a slot whose sockets are closed and whose buffers are freed to the free list.
    func recycle(slot: Int) {
        self.deadlines.stop(slot: slot)
        var generation = self.slots[slot].generation &+ 1
        if generation > Token.maximumGeneration { generation = 1 }
        self.slots[slot] = RelaySlot(settings: self.shared.machineSettings)
        self.slots[slot].generation = generation
        self.freeSlots.append(Int32(slot))
        self.load.wrappingDecrement(ordering: .relaxed)
        self.shared.releaseSlot()
    }
}

// MARK: - epoll

extension RelayLoop {
    private func register(_ fd: Int32, token: UInt64, events: UInt32) {
        var event = epoll_event()
        l4lb_epoll_event_set(&event, events, token)
        epoll_ctl(self.epoll, EPOLL_CTL_ADD, fd, &event)
    }

    /// Adds a connection's socket to epoll once, for both directions, edge-triggered. It leaves
    /// epoll when it is closed.
    func register(_ fd: Int32, slot: Int, side: RelayMachine.Side) {
        let token = Token.connection(slot: slot, side: side, generation: self.slots[slot].generation)
        self.register(
            fd,
            token: token,
            events: EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        )
    }

    static func monotonicNow() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
