import Atomics
import CLinux
import Foundation
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// One relay thread: an edge-triggered epoll loop that accepts clients from the listening sockets
/// it shares with the other relay threads, connects them to backends and relays their bytes, with
/// every connection's state in a slab of `RelaySlot`s. The decisions are `RelayMachine`'s; this type
/// only does the system calls, through `Kernel` (`SystemKernel` in production, a simulated kernel in
/// the tests).
///
/// What a connection costs it, by design (HAProxy's connection layer is the model):
/// - each socket is added to epoll once, for both directions, and leaves it by `close`;
/// - addresses come from `accept4` and the pre-resolved backend, and are never asked for;
/// - accepted sockets inherit TCP_NODELAY and SO_KEEPALIVE from the listener;
/// - timers are lists in the slab (`DeadlineLists`), not kernel timers;
/// - bytes go through one per-thread buffer and are copied only when a peer cannot take them.
///
/// Threading: everything but `post` runs on the loop's thread.
final class RelayLoop<Kernel: RelayKernel>: RelayCommandTarget, @unchecked Sendable {
    /// Commands from other threads, and whether the loop still takes them. One lock guards both and
    /// the write to the wake-up descriptor, so that no post writes to it once the loop has closed it.
    private struct Mailbox {
        var commands: [RelayCommand] = []
        var open = true
    }

    let kernel: Kernel
    let shared: RelayShared
    let name: String
    /// The one CPU this loop's thread runs on (`--relay-cpus`), or nil for any.
    private let cpu: Int?
    /// The scheduler slice this loop's thread asks for (`--relay-slice`), or nil for the kernel's.
    private let slice: SchedulerSlice?
    private let epoll: Int32
    private let wake: Int32
    var listeners: [RelayListener] = []
    private var listenersArmed = true
    /// Set once this loop has stopped accepting for good (it tells RelayShared once).
    private var stoppedAccepting = false
    /// Set while the listeners are off because descriptors ran out: when to try again.
    private var acceptRetryAt: UInt64?
    var slots = SlotSlab()
    private var freeSlots: [Int32] = []
    /// The last epoll registration id given out (`RelayToken`).
    private var lastRegistration: UInt32 = 0
    var deadlines: DeadlineLists
    /// The loop's one read buffer.
    let scratch: UnsafeMutableRawPointer
    static var scratchSize: Int { 64 * 1024 }
    private static var maximumEvents: Int32 { 256 }
    /// Clients accepted per listener event before the loop turns to other work: few, as HAProxy's
    /// tune.maxaccept, so that each accepted client's request, which can only come once this turn
    /// is over, reaches its backend soon (docs/performance.md).
    static var acceptBatch: Int { 4 }
    private let events: UnsafeMutablePointer<epoll_event>
    private let mailbox = NIOLockedValueBox(Mailbox())
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
    /// loop: see `passOnClientShutdowns`.
    var clientShutdowns = ClientShutdowns()

    init(
        name: String,
        cpu: Int? = nil,
        kernel: Kernel,
        shared: RelayShared,
        configuration: ProxyConfiguration
    ) throws(L4LBError) {
        self.name = name
        self.cpu = cpu
        self.slice = configuration.relaySlice
        self.kernel = kernel
        self.shared = shared
        let epoll = kernel.makePoller()
        let wake = kernel.makeWakeup()
        guard epoll >= 0, wake >= 0 else {
            if epoll >= 0 { SocketCalls.close(kernel, epoll) }
            if wake >= 0 { SocketCalls.close(kernel, wake) }
            let code = epoll < 0 ? -epoll : -wake
            throw L4LBError(.bindFailed, "cannot create the relay's event loop: \(SocketCalls.describe(code))")
        }
        self.epoll = epoll
        self.wake = wake
        self.deadlines = DeadlineLists(
            proxyHeader: configuration.acceptProxyProtocol.map { UInt64(max(0, $0.nanoseconds)) },
            connect: UInt64(max(0, configuration.connectTimeout.nanoseconds)),
            idle: configuration.idleTimeout.map { UInt64(max(0, $0.nanoseconds)) }
        )
        self.scratch = UnsafeMutableRawPointer.allocate(byteCount: Self.scratchSize, alignment: 16)
        self.events = UnsafeMutablePointer<epoll_event>.allocate(capacity: Int(Self.maximumEvents))
        let watched = kernel.control(
            poller: epoll,
            operation: EPOLL_CTL_ADD,
            fd: wake,
            events: EPOLLIN.rawValue,
            token: RelayToken.wake
        )
        guard watched == 0 else {
            self.scratch.deallocate()
            self.events.deallocate()
            SocketCalls.close(kernel, epoll)
            SocketCalls.close(kernel, wake)
            throw L4LBError(.bindFailed, "cannot create the relay's event loop: \(SocketCalls.describe(-watched))")
        }
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
    func adopt(listener: RelayListener) {
        self.listeners.append(listener)
        self.watch(listener: self.listeners.count - 1, true)
    }

    private func watch(listener index: Int, _ watched: Bool) {
        let fd = self.listeners[index].fd
        guard fd >= 0 else { return }
        // EPOLLEXCLUSIVE cannot be modified, only added and deleted.
        let exclusive = self.listeners[index].shared ? EPOLLEXCLUSIVE.rawValue : 0
        let result = self.kernel.control(
            poller: self.epoll,
            operation: watched ? EPOLL_CTL_ADD : EPOLL_CTL_DEL,
            fd: fd,
            events: EPOLLIN.rawValue | exclusive,
            token: RelayToken.listener(index)
        )
        if result < 0 {
            SocketCalls.checkAcceptable(-result, "epoll_ctl")
            // Kernel memory or epoll's watch limit: this loop cannot watch the listener, and the
            // other loops (or the next resume) still serve it.
            self.shared.logger.error(
                watched ? "cannot watch a listening socket" : "cannot stop watching a listening socket",
                metadata: ["thread": "\(self.name)", "error": "\(SocketCalls.describe(-result))"]
            )
        }
    }

    func start() {
        Thread { [self] in
            // Named from inside, through the kernel: Foundation's `Thread.name`, set before `start`,
            // never reached it, and a new Linux thread keeps its creator's name.
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
        self.mailbox.withLockedValue { $0.open = false }
        SocketCalls.close(self.kernel, self.epoll)
        SocketCalls.close(self.kernel, self.wake)
    }

    /// Asks the loop to do `command` on its thread; false once the loop has ended.
    @discardableResult
    func post(_ command: RelayCommand) -> Bool {
        self.mailbox.withLockedValue { mailbox in
            guard mailbox.open else { return false }
            mailbox.commands.append(command)
            // A wake-up is already pending while earlier commands wait: the loop clears the counter
            // before it takes the commands, so it takes this one too.
            if mailbox.commands.count == 1 {
                let result = self.kernel.signal(wakeup: self.wake)
                // EAGAIN: the counter is at its maximum, so the loop is woken anyway.
                if result < 0, result != -EAGAIN { SocketCalls.checkAcceptable(-result, "eventfd write") }
            }
            return true
        }
    }

    /// Blocks until the thread has ended after `.stop`.
    func waitUntilExited() {
        self.exited.lock(whenValue: 1)
        self.exited.unlock()
    }

    /// Whether the loop still runs (it stops on `.stop`, or when epoll fails).
    var isRunning: Bool { self.running }

    /// The loop's epoll descriptor (the simulation asks its kernel what is ready on it).
    var pollerDescriptor: Int32 { self.epoll }

    #if DEBUG
    /// Defects planted on purpose, to show that the simulation catches them (RelaySimulationTests).
    /// Debug builds only: a release build has no such branch.
    enum PlantedBug {
        /// Traffic restarts whatever timer runs, the connect and PROXY-header deadlines included.
        case trafficRestartsEveryTimer
        /// A retried backend is registered under the registration id of the socket it replaces.
        case retryKeepsRegistration
    }

    var plantedBugs: Set<PlantedBug> = []
    #endif

    private func run() {
        self.now = self.kernel.now()
        while self.running {
            self.turn()
        }
        self.end()
        self.exited.lock()
        self.exited.unlock(withValue: 1)
    }

    /// One turn of the loop: waits for events (or the next timer), handles them, passes on the FINs
    /// put off and fires the timers due. The simulation drives the loop by this, one turn at a time.
    func turn() {
        // A FIN put off waits for one more look at the sockets, not for the next event.
        let wait = self.clientShutdowns.isEmpty ? self.waitMilliseconds() : 0
        let count = self.kernel.wait(
            poller: self.epoll,
            events: self.events,
            capacity: Self.maximumEvents,
            timeout: wait
        )
        self.now = self.kernel.now()
        if count < 0 {
            if count == -EINTR { return }
            self.shared.logger.critical(
                "epoll_wait failed; this relay thread stops",
                metadata: ["thread": "\(self.name)", "error": "\(SocketCalls.describe(-count))"]
            )
            self.running = false
            return
        }
        for index in 0..<Int(count) {
            let event = self.events + index
            self.dispatch(token: l4lb_epoll_event_token(event), events: l4lb_epoll_event_events(event))
        }
        self.passOnClientShutdowns()
        self.expireTimers()
    }

    /// Closes every connection and the loop's descriptors; no command is taken after this. A client
    /// another loop handed over and this one never adopted is closed here, not leaked.
    func end() {
        self.closeListeners()
        for index in 0..<self.slots.count where self.slots[index].inUse {
            self.handle(.closeRequested(unacknowledged: self.hasUnacknowledgedBytes(slot: index)), slot: index)
        }
        let left = self.mailbox.withLockedValue { mailbox in
            mailbox.open = false
            defer { mailbox.commands = [] }
            return mailbox.commands
        }
        for command in left {
            switch command {
            case .adoptClient(let fd, _, _):
                SocketCalls.closeWithReset(self.kernel, fd)
                self.load.wrappingDecrement(ordering: .relaxed)
                self.shared.releaseSlot()
            case .changeListeners(_, _, let release):
                release.loopDone()
            case .resumeAccepting, .stopAccepting, .closeAll, .stop:
                break
            }
        }
        SocketCalls.close(self.kernel, self.epoll)
        SocketCalls.close(self.kernel, self.wake)
        self.siblings = []
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
        if token == RelayToken.wake {
            self.runCommands()
            return
        }
        if RelayToken.isListener(token) {
            self.acceptClients(listener: Int(token & 0xFFFF_FFFF))
            return
        }
        let slot = RelayToken.slot(token)
        let side = RelayToken.side(token)
        let registration = RelayToken.registration(token)
        guard slot < self.slots.count, self.slots[slot].inUse,
            registration
                == (side == .client ? self.slots[slot].clientRegistration : self.slots[slot].backendRegistration)
        else {
            // Queued for a socket closed earlier in this batch: a connection that ended, or the
            // backend socket of an attempt given up for another.
            self.shared.countStaleEvent()
            return
        }
        self.socketEvent(events, side: side, slot: slot)
    }

    private func runCommands() {
        // Cleared before the commands are taken: a post after this either lands in this batch or
        // wakes the loop again.
        let cleared = self.kernel.clear(wakeup: self.wake)
        if cleared < 0, cleared != -EAGAIN { SocketCalls.checkAcceptable(-cleared, "eventfd read") }
        let commands = self.mailbox.withLockedValue { mailbox in
            defer { mailbox.commands = [] }
            return mailbox.commands
        }
        for command in commands {
            switch command {
            case .resumeAccepting:
                self.armListeners(true)
            case .stopAccepting:
                self.closeListeners()
            case .closeAll:
                for index in 0..<self.slots.count where self.slots[index].inUse {
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

    /// Whether bytes are still on their way through either socket of `slot`: sent and not yet
    /// acknowledged by its peer, or arrived and not yet read by l4lb. Then a FIN would end a stream
    /// short of what was sent, and look complete: the connection is reset instead. Asked only when
    /// l4lb itself closes a connection (a timeout, the end of a drain), never per byte.
    private func hasUnacknowledgedBytes(slot: Int) -> Bool {
        [self.slots[slot].clientFD, self.slots[slot].backendFD].contains { fd in
            fd >= 0 && (self.kernel.unacknowledgedBytes(fd) > 0 || self.kernel.unreadBytes(fd) > 0)
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
            switch SocketCalls.accept(self.kernel, listenerFD) {
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
                case .reset, .noFreePorts, .other:
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

    private func changeListeners(add: [RelayListener], remove: [RawSocketAddress]) {
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
        for listener in self.listeners where !listener.shared && listener.fd >= 0 {
            SocketCalls.close(self.kernel, listener.fd)
        }
        for index in self.listeners.indices { self.listeners[index].fd = -1 }
        if self.shared.loopStoppedAccepting() {
            for fd in shared where fd >= 0 { SocketCalls.close(self.kernel, fd) }
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
            if least.post(.adoptClient(fd: fd, peer: peer, local: self.listeners[listener])) {
                self.shared.countHandOver()
                return
            }
            // That loop has ended (a shutdown under way): the client is served here.
            least.load.wrappingDecrement(ordering: .relaxed)
        }
        self.load.wrappingIncrement(ordering: .relaxed)
        self.open(client: fd, peer: peer, listener: listener)
    }

    /// The index of this loop's listener for `listener`'s address, for a client another loop
    /// accepted; an entry that is not watched is added if this loop has none (its sockets differ).
    private func listenerIndex(for listener: RelayListener) -> Int {
        if let index = self.listeners.firstIndex(where: { $0.local.sameEndpoint(as: listener.local) }) {
            return index
        }
        self.listeners.append(RelayListener(fd: -1, local: listener.local, wildcard: listener.wildcard, shared: false))
        return self.listeners.count - 1
    }

    private func open(client fd: Int32, peer: RawSocketAddress, listener: Int) {
        let slot = self.allocateSlot()
        self.slots[slot].inUse = true
        self.slots[slot].clientFD = fd
        self.slots[slot].client = ClientAddress(peer)
        self.slots[slot].listener = listener
        self.slots[slot].acceptedAt = self.now
        guard self.register(fd, slot: slot, side: .client) else {
            // epoll cannot watch it (kernel memory, max_user_watches): a client that would never get
            // an event is closed now, not left to hang.
            self.handle(.localResourcesExhausted, slot: slot)
            return
        }
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
        let settings = self.shared.machineSettings
        self.slots.grow(to: count) { RelaySlot(settings: settings) }
        self.deadlines.grow(to: count)
        // Lowest indices last, so they are taken first and the slab's hot part stays small.
        self.freeSlots.append(contentsOf: (old..<count).reversed().map { Int32($0) })
    }

    /// Returns a slot whose sockets are closed and whose buffers are freed to the free list.
    func recycle(slot: Int) {
        self.deadlines.stop(slot: slot)
        let generation = self.slots[slot].generation &+ 1
        // Dropping the old slot frees its queues' buffers.
        self.slots[slot] = RelaySlot(settings: self.shared.machineSettings)
        self.slots[slot].generation = generation
        self.freeSlots.append(Int32(slot))
        self.load.wrappingDecrement(ordering: .relaxed)
        self.shared.releaseSlot()
    }
}

// MARK: - epoll

extension RelayLoop {
    /// Adds a connection's socket to epoll once, for both directions, edge-triggered, under a new
    /// registration id (`RelayToken`); it leaves epoll when it is closed. False if epoll refused it.
    func register(_ fd: Int32, slot: Int, side: RelayMachine.Side) -> Bool {
        self.lastRegistration = self.lastRegistration >= RelayToken.maximumRegistration ? 1 : self.lastRegistration + 1
        var registration = self.lastRegistration
        #if DEBUG
        if self.plantedBugs.contains(.retryKeepsRegistration), side == .backend,
            self.slots[slot].backendRegistration != 0
        {
            registration = self.slots[slot].backendRegistration
        }
        #endif
        let result = self.kernel.control(
            poller: self.epoll,
            operation: EPOLL_CTL_ADD,
            fd: fd,
            events: EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue,
            token: RelayToken.connection(slot: slot, side: side, registration: registration)
        )
        guard result == 0 else {
            SocketCalls.checkAcceptable(-result, "epoll_ctl")
            self.shared.resourceLog.warning(
                self.shared.logger,
                "epoll cannot watch a socket: closing the client",
                metadata: ["error": "\(SocketCalls.describe(-result))", "open": "\(self.shared.activeCount)"]
            )
            return false
        }
        switch side {
        case .client: self.slots[slot].clientRegistration = registration
        case .backend: self.slots[slot].backendRegistration = registration
        }
        return true
    }
}
