import CLinux
import Glibc

@testable import LBKit

/// How often the simulated kernel fails a call that may fail, per seed.
struct SimulatedFaults: Equatable {
    var interrupted = 0.0
    var acceptOutOfFiles = 0.0
    var acceptAborted = 0.0
    var socketOutOfFiles = 0.0
    var connectNoFreePort = 0.0
    var epollControlFails = 0.0
    /// An edge-triggered event with nothing new behind it (epoll may wake without cause).
    var spuriousEvent = 0.0

    static let none = SimulatedFaults()
}

/// A kernel for the relay loop that exists only in memory: descriptors, stream sockets with bounded
/// buffers in each direction, listeners, eventfds and epoll with edge- and level-triggered
/// registrations, and a virtual clock. Readiness is delivered in batches in an order the seeded
/// generator picks, and a batch keeps its events for sockets that the loop closes while handling it,
/// as the real kernel's does. Faults are injected at the rates of `faults`.
///
/// What happens at the far end of each connection is `SimulatedNetwork`'s; this type is only the
/// kernel's side. Every misuse the real kernel would answer with EBADF, and every act that breaks
/// an invariant, is recorded in `network.violations`.
final class SimulatedKernel: RelayKernel, @unchecked Sendable {
    var clock: UInt64 = 1_000_000_000
    var random: SimulationRandom
    var faults: SimulatedFaults
    unowned(unsafe) var network: SimulatedNetwork!
    private var table: [SimulatedSocket?] = [nil, nil, nil]
    private var serials = 0
    /// Calls the loop made: what a run reports, and a bound against a loop that spins.
    private(set) var calls = 0

    init(random: SimulationRandom, faults: SimulatedFaults) {
        self.random = random
        self.faults = faults
    }

    // MARK: Descriptors

    func makeSocket(_ kind: SimulatedSocket.Kind) -> SimulatedSocket {
        self.serials += 1
        let socket = SimulatedSocket(serial: self.serials, kind: kind)
        socket.openedAt = self.clock
        return socket
    }

    /// Gives `socket` the lowest free descriptor, as the kernel does (so numbers are reused at once).
    @discardableResult
    func install(_ socket: SimulatedSocket) -> Int32 {
        let fd: Int32
        if let free = self.table.indices.dropFirst(3).first(where: { self.table[$0] == nil }) {
            fd = Int32(free)
            self.table[free] = socket
        } else {
            fd = Int32(self.table.count)
            self.table.append(socket)
        }
        socket.fd = fd
        return fd
    }

    func file(_ fd: Int32, _ call: String) -> SimulatedSocket? {
        guard fd >= 0, Int(fd) < self.table.count, let socket = self.table[Int(fd)] else {
            self.network.violation("\(call) on descriptor \(fd), which is not open (EBADF)")
            return nil
        }
        return socket
    }

    /// Descriptors open now, with the file behind each.
    var openFiles: [SimulatedSocket] { self.table.compactMap { $0 } }

    private func release(_ socket: SimulatedSocket) {
        guard let fd = socket.fd else { return }
        self.table[Int(fd)] = nil
        socket.fd = nil
        for registration in socket.registrations {
            registration.poller.interest.removeAll { $0 === registration }
        }
        socket.registrations = []
        // A closed epoll instance takes its interest list with it.
        for registration in socket.interest {
            registration.socket.registrations.removeAll { $0 === registration }
        }
        socket.interest = []
    }

    /// Something changed on `socket`: each edge-triggered registration of it has news to report.
    func touch(_ socket: SimulatedSocket) {
        for registration in socket.registrations { registration.pending = true }
    }

    // MARK: RelayKernel

    func now() -> UInt64 { self.clock }

    func makePoller() -> Int32 {
        self.calls += 1
        return self.install(self.makeSocket(.poller))
    }

    func makeWakeup() -> Int32 {
        self.calls += 1
        return self.install(self.makeSocket(.wakeup))
    }

    func control(poller: Int32, operation: Int32, fd: Int32, events: UInt32, token: UInt64) -> Int32 {
        self.calls += 1
        guard let epoll = self.file(poller, "epoll_ctl"), epoll.kind == .poller else { return -EBADF }
        guard let socket = self.file(fd, "epoll_ctl") else { return -EBADF }
        switch operation {
        case EPOLL_CTL_ADD:
            if socket.kind == .stream, self.random.chance(self.faults.epollControlFails) { return -ENOMEM }
            if epoll.interest.contains(where: { $0.socket === socket }) { return -EEXIST }
            let registration = SimulatedRegistration(
                socket: socket,
                poller: epoll,
                fd: fd,
                token: token,
                events: events
            )
            epoll.interest.append(registration)
            socket.registrations.append(registration)
            return 0
        case EPOLL_CTL_DEL:
            guard epoll.interest.contains(where: { $0.socket === socket }) else { return -ENOENT }
            epoll.interest.removeAll { $0.socket === socket }
            socket.registrations.removeAll { $0.poller === epoll }
            return 0
        default:
            return -EINVAL
        }
    }

    /// Events ready on `poller` now, in the order epoll found them.
    func readyRegistrations(_ poller: SimulatedSocket) -> [SimulatedRegistration] {
        poller.interest.filter { registration in
            let always = EPOLLERR.rawValue | EPOLLHUP.rawValue
            let ready = registration.socket.readiness & (registration.events | always) != 0
            return registration.edgeTriggered ? registration.pending && ready : ready
        }
    }

    func hasReadyEvents(_ poller: Int32) -> Bool {
        guard Int(poller) < self.table.count, let epoll = self.table[Int(poller)] else { return false }
        return !self.readyRegistrations(epoll).isEmpty
    }

    /// Never blocks: with nothing ready it returns 0 and notes when the loop wants to wake, and the
    /// simulation moves the clock (`SimulatedNetwork.step`).
    func wait(poller: Int32, events: UnsafeMutablePointer<epoll_event>, capacity: Int32, timeout: Int32) -> Int32 {
        self.calls += 1
        guard let epoll = self.file(poller, "epoll_wait"), epoll.kind == .poller else { return -EBADF }
        if self.random.chance(self.faults.interrupted) {
            self.network.trace("epoll \(poller) interrupted")
            return -EINTR
        }
        var ready = self.readyRegistrations(epoll)
        if ready.isEmpty, self.random.chance(self.faults.spuriousEvent),
            let any = epoll.interest.filter({ $0.edgeTriggered && $0.socket.kind == .stream }).randomElement(
                using: &self.random
            )
        {
            ready = [any]
        }
        let called = epoll.lastReturn ?? self.clock
        epoll.lastReturn = self.clock
        guard !ready.isEmpty else {
            epoll.wakeAt = timeout < 0 ? nil : called + UInt64(timeout) * 1_000_000
            self.network.trace("epoll \(poller) waits \(timeout) ms")
            return 0
        }
        ready.shuffle(using: &self.random)
        let count = min(Int(capacity), self.random.chance(0.3) ? self.random.int(1...ready.count) : ready.count)
        self.network.trace(
            "epoll \(poller) returns \(ready.prefix(count).map { "fd \($0.fd): \($0.socket.readiness)" })"
        )
        for (index, registration) in ready.prefix(count).enumerated() {
            registration.pending = false
            let mask = registration.socket.readiness & (registration.events | EPOLLERR.rawValue | EPOLLHUP.rawValue)
            l4lb_epoll_event_set(events + index, mask, registration.token)
        }
        epoll.wakeAt = self.clock
        return Int32(count)
    }

    func signal(wakeup: Int32) -> Int32 {
        guard let socket = self.file(wakeup, "eventfd write") else { return -EBADF }
        guard socket.kind == .wakeup else {
            self.network.violation("an eventfd write landed on a \(socket.kind) that reused the descriptor")
            return -EINVAL
        }
        socket.counter += 1
        return 0
    }

    func clear(wakeup: Int32) -> Int32 {
        self.calls += 1
        guard let socket = self.file(wakeup, "eventfd read"), socket.kind == .wakeup else { return -EBADF }
        guard socket.counter > 0 else { return -EAGAIN }
        socket.counter = 0
        return 0
    }

    func accept(listener: Int32, peer: inout RawSocketAddress) -> Int32 {
        self.calls += 1
        guard let socket = self.file(listener, "accept4"), socket.kind == .listener else { return -EBADF }
        if self.random.chance(self.faults.interrupted) { return -EINTR }
        guard !socket.acceptQueue.isEmpty else { return -EAGAIN }
        if self.random.chance(self.faults.acceptOutOfFiles) { return -EMFILE }
        let client = socket.acceptQueue.removeFirst()
        if self.random.chance(self.faults.acceptAborted) {
            // The client reset while queued: the kernel drops it and says so.
            self.network.abortedInQueue(client)
            return -ECONNABORTED
        }
        peer = client.peerAddress
        client.lastTraffic = self.clock
        client.openedAt = self.clock
        let fd = self.install(client)
        self.network.accepted(client)
        return fd
    }

    func makeStreamSocket(family: Int32) -> Int32 {
        self.calls += 1
        if self.random.chance(self.faults.socketOutOfFiles) { return -EMFILE }
        let socket = self.makeSocket(.stream)
        socket.connectState = .connecting
        return self.install(socket)
    }

    func connect(_ fd: Int32, to address: RawSocketAddress) -> Int32 {
        self.calls += 1
        guard let socket = self.file(fd, "connect"), socket.kind == .stream else { return -EBADF }
        if self.random.chance(self.faults.interrupted) {
            // The connect goes on: its outcome comes as for EINPROGRESS.
            _ = self.network.connecting(socket, to: address, mayAnswerAtOnce: false)
            return -EINTR
        }
        if self.random.chance(self.faults.connectNoFreePort) {
            self.network.noFreePort(socket)
            return -EADDRNOTAVAIL
        }
        return self.network.connecting(socket, to: address, mayAnswerAtOnce: true)
    }

    func pendingError(_ fd: Int32) -> Int32 {
        self.calls += 1
        guard let socket = self.file(fd, "getsockopt"), socket.kind == .stream else { return -EBADF }
        if socket.pendingError == 0, socket.connectState != .failed, !socket.peerReset {
            self.network.violation(
                "SO_ERROR asked of socket #\(socket.serial), which raised no error: an event reached the wrong socket"
            )
        }
        let code = socket.pendingError
        socket.pendingError = 0
        if code == ECONNRESET { self.network.observedReset(socket) }
        return code
    }

    func localAddress(_ fd: Int32) -> RawSocketAddress? {
        self.calls += 1
        guard self.file(fd, "getsockname") != nil else { return nil }
        return nil
    }

    func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, capacity: Int) -> Int {
        self.calls += 1
        guard let socket = self.file(fd, "recv"), socket.kind == .stream else { return -Int(EBADF) }
        if self.random.chance(self.faults.interrupted) { return -Int(EINTR) }
        // As Linux: bytes that came before a reset are read first, then the reset is reported.
        if !socket.inbound.isEmpty {
            let bytes = socket.inbound.take(capacity)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            socket.lastTraffic = self.clock
            self.network.lbRead(socket, count: bytes.count)
            return bytes.count
        }
        if socket.pendingError != 0 {
            let code = socket.pendingError
            socket.pendingError = 0
            if code == ECONNRESET { self.network.observedReset(socket) }
            return -Int(code)
        }
        if socket.peerFinished || socket.peerReset { return 0 }
        return -Int(EAGAIN)
    }

    func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int {
        self.calls += 1
        guard let socket = self.file(fd, "send"), socket.kind == .stream else { return -Int(EBADF) }
        if self.random.chance(self.faults.interrupted) { return -Int(EINTR) }
        if socket.writeShut {
            self.network.violation("send on socket #\(socket.serial) after l4lb shut its writing down")
            return -Int(EPIPE)
        }
        guard socket.connectState == .established else {
            self.network.violation("send on socket #\(socket.serial) before its connect completed")
            return -Int(EAGAIN)
        }
        if socket.peerReset {
            if socket.pendingError != 0 {
                socket.pendingError = 0
                self.network.observedReset(socket)
                return -Int(ECONNRESET)
            }
            self.network.observedReset(socket)
            return -Int(EPIPE)
        }
        let room = socket.outboundCapacity - socket.outbound.count
        guard room > 0 else { return -Int(EAGAIN) }
        let count = min(room, bytes.count)
        let sent = Array(bytes.prefix(count))
        socket.outbound.append(sent)
        socket.lastTraffic = self.clock
        self.network.lbSent(socket, sent)
        return count
    }

    func shutdownWrite(_ fd: Int32) -> Int32 {
        self.calls += 1
        guard let socket = self.file(fd, "shutdown"), socket.kind == .stream else { return -EBADF }
        guard socket.connectState == .established else { return -ENOTCONN }
        if !socket.writeShut {
            socket.writeShut = true
            self.network.lbEnded(socket, reset: false)
        }
        return 0
    }

    func lingerZero(_ fd: Int32) -> Int32 {
        self.calls += 1
        guard let socket = self.file(fd, "setsockopt"), socket.kind == .stream else { return -EBADF }
        socket.lingerZero = true
        return 0
    }

    func close(_ fd: Int32) -> Int32 {
        self.calls += 1
        guard let socket = self.file(fd, "close") else { return -EBADF }
        self.release(socket)
        switch socket.kind {
        case .stream:
            if socket.connectState == .established {
                // Unread input makes the kernel reset rather than FIN, as Linux does.
                if socket.lingerZero || !socket.inbound.isEmpty {
                    socket.resetByL4LB = true
                    self.network.lbEnded(socket, reset: true)
                } else if !socket.writeShut {
                    socket.writeShut = true
                    self.network.lbEnded(socket, reset: false)
                }
            }
            self.network.lbClosed(socket)
        case .listener:
            for client in socket.acceptQueue { self.network.abortedInQueue(client) }
            socket.acceptQueue = []
        case .poller, .wakeup:
            break
        }
        return 0
    }

    func unacknowledgedBytes(_ fd: Int32) -> Int {
        self.calls += 1
        guard let socket = self.file(fd, "ioctl(SIOCOUTQ)"), socket.kind == .stream else { return 0 }
        return socket.outbound.count
    }

    func unreadBytes(_ fd: Int32) -> Int {
        self.calls += 1
        guard let socket = self.file(fd, "ioctl(SIOCINQ)"), socket.kind == .stream else { return 0 }
        return socket.inbound.count
    }
}
