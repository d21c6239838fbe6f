import Glibc
import NIOCore

@testable import LBKit

/// The far ends of the simulated connections, and the invariants checked as they move: clients that
/// connect, send a body that starts with their own id (some with a PROXY header first, some
/// trickling it), read, end with a FIN or a reset or fall silent; backends that echo, refuse, never
/// answer a SYN, reset before or after answering, or close without a word.
///
/// Invariants, each checked when the step that could break it happens:
/// - a backend receives a prefix of what one client sent, in order; a client receives a prefix of
///   what its backend sent;
/// - a clean end (FIN) reaches a peer only with every byte its partner sent, and never after
///   l4lb has read a reset from that partner (a reset is passed on as a reset);
/// - a backend is charged a failure only for its own (refused, never answered, reset before answering);
/// - each timer fires within its bound: the PROXY header and connect deadlines are absolute, the
///   idle timer runs from the last byte moved;
/// - no call names a closed descriptor, and SO_ERROR is asked only of a socket that raised an error;
/// - at the end every client has ended, and no descriptor, slot or buffer is left.
final class SimulatedNetwork {
    enum Peer {
        case client(Int)
        case backend(Int)
    }

    enum BackendBehavior: CaseIterable {
        case echo
        case refuse
        case blackhole
        case resetBeforeAnswer
        case answerThenReset
        case closeWithoutAnswer
    }

    struct Settings {
        var proxyHeader: UInt64?
        var connect: UInt64
        var idle: UInt64?
        /// Timers fire this late at most: the loop rounds its wait up to a millisecond.
        var slack: UInt64 = 3_000_000
    }

    enum ClientEnd: Equatable {
        case endOfStream
        case resetByL4LB
        case resetBySelf
        case refusedInQueue
    }

    final class Client {
        let index: Int
        let socket: SimulatedSocket
        let header: [UInt8]
        let body: [UInt8]
        var headerSent = 0
        var bodySent = 0
        var headerChunk: Int
        var bodyChunk: Int
        var gap: UInt64
        var readGap: UInt64
        /// Sends a FIN once its body is out (otherwise it waits for l4lb to end the connection).
        var finishes: Bool
        var resetAt: UInt64?
        var finSent = false
        /// Every byte l4lb has sent it, read or not.
        var sentByL4LB = 0
        /// Its backend connections: those whose bytes are its body's.
        var carriers: [BackendConnection] = []
        var ended: ClientEnd?
        var acceptedAt: UInt64?
        var headerCompleteAt: UInt64?
        var l4lbReadItsReset = false
        var writeScheduled = false
        var readScheduled = false

        init(index: Int, socket: SimulatedSocket, header: [UInt8], body: [UInt8], random: inout SimulationRandom) {
            self.index = index
            self.socket = socket
            self.header = header
            self.body = body
            self.headerChunk = random.chance(0.3) ? 1 : random.int(1...64)
            // Small writes, but no more than about a hundred of them: a run stays seconds long.
            self.bodyChunk = max(random.int(1...4096), body.count / 100)
            self.gap = UInt64(random.int(10...4000)) * 10_000
            // One in five reads slowly, so that l4lb's buffers toward it fill and push back (slowly
            // enough to take a few seconds, not so slowly that a large body takes minutes).
            self.readGap = UInt64(random.chance(0.2) ? random.int(20...200) : random.int(0...5)) * 1_000_000 + 100_000
            self.finishes = random.chance(0.8)
        }
    }

    final class BackendConnection {
        let index: Int
        let backend: Int
        let socket: SimulatedSocket
        let behavior: BackendBehavior
        /// Bytes read before it resets (resetBeforeAnswer) or echoed before it resets (answerThenReset).
        let resetAfter: Int
        /// Bytes l4lb has sent it.
        var fromL4LB = 0
        var consumed = 0
        var echo = ByteFIFO()
        var sent: [UInt8] = []
        var finished = false
        var reset = false
        var ended = false
        var establishedAt: UInt64?
        /// The clients whose body `fromL4LB` is a prefix of: one, once enough bytes came.
        var candidates: [Int]?
        var l4lbReadItsReset = false
        var readScheduled = false

        init(index: Int, backend: Int, socket: SimulatedSocket, behavior: BackendBehavior, resetAfter: Int) {
            self.index = index
            self.backend = backend
            self.socket = socket
            self.behavior = behavior
            self.resetAfter = resetAfter
        }
    }

    let kernel: SimulatedKernel
    let settings: Settings
    var clients: [Client] = []
    var connections: [BackendConnection] = []
    var behaviors: [BackendBehavior]
    let basePort: Int
    /// Failures each backend really had: the most it may be charged.
    var ownFailures: [Int]
    var violations: [String] = []
    private var schedule: [(time: UInt64, order: Int, action: () -> Void)] = []
    private var order = 0
    var listeners: [SimulatedSocket] = []

    init(kernel: SimulatedKernel, settings: Settings, behaviors: [BackendBehavior], basePort: Int) {
        self.kernel = kernel
        self.settings = settings
        self.behaviors = behaviors
        self.basePort = basePort
        self.ownFailures = Array(repeating: 0, count: behaviors.count)
    }

    var random: SimulationRandom {
        get { self.kernel.random }
        set { self.kernel.random = newValue }
    }

    var now: UInt64 { self.kernel.clock }

    /// Prints each act of the run (SIMULATION_TRACE=1 with SIMULATION_SEED=N).
    var tracing = false

    func trace(_ text: @autoclosure () -> String) {
        if self.tracing { print("  \(Double(self.now - 1_000_000_000) / 1e9)s \(text())") }
    }

    func violation(_ text: String) {
        self.violations.append("t=\(Double(self.now - 1_000_000_000) / 1e9)s: \(text)")
    }

    // MARK: The schedule

    /// Peers act on multiples of this (0: any nanosecond). Coarse ticks make many peers act at one
    /// instant, so their events share an epoll batch: the orderings that are rare on a real machine.
    var tick: UInt64 = 0

    func at(_ time: UInt64, _ action: @escaping () -> Void) {
        self.order += 1
        let time = self.tick > 0 ? (time + self.tick - 1) / self.tick * self.tick : time
        self.schedule.append((time, self.order, action))
    }

    func after(_ delay: UInt64, _ action: @escaping () -> Void) {
        self.at(self.now + delay, action)
    }

    var nextEventTime: UInt64? { self.schedule.min { ($0.time, $0.order) < ($1.time, $1.order) }?.time }

    /// Runs every action due at the current time, in the order they were scheduled.
    func runDue() {
        while let index = self.schedule.indices.filter({ self.schedule[$0].time <= self.now }).min(by: {
            (self.schedule[$0].time, self.schedule[$0].order) < (self.schedule[$1].time, self.schedule[$1].order)
        }) {
            let action = self.schedule.remove(at: index).action
            action()
        }
    }

    // MARK: Clients

    /// A client that will connect to `listener` at `time`.
    func addClient(at time: UInt64, listener: SimulatedSocket, proxyHeader: Bool, bodyLength: Int, resetAt: UInt64?) {
        let index = self.clients.count
        let socket = self.kernel.makeSocket(.stream)
        // Tiny buffers split every read and write; a large body gets room enough to end in seconds.
        let smallest = bodyLength > 4096 ? 4096 : 1
        socket.inboundCapacity =
            self.random.chance(0.3) ? self.random.int(smallest...4096) : self.random.int(4096...65536)
        socket.outboundCapacity =
            self.random.chance(0.3) ? self.random.int(smallest...4096) : self.random.int(4096...65536)
        socket.peerAddress = RawSocketAddress(try! SocketAddress(ipAddress: "192.0.2.1", port: 10000 + index))
        socket.peer = .client(index)
        // The first byte names the client, so a backend's first byte says whose bytes it carries.
        var body: [UInt8] = [UInt8(index)]
        body.reserveCapacity(bodyLength + 8)
        var generator = self.random
        while body.count < max(1, bodyLength) {
            withUnsafeBytes(of: generator.next()) { body.append(contentsOf: $0) }
        }
        self.random = generator
        body.removeLast(body.count - max(1, bodyLength))
        let header =
            proxyHeader
            ? Array("PROXY TCP4 198.51.100.\(index % 250 + 1) 203.0.113.1 \(20000 + index) 80\r\n".utf8) : []
        let client = Client(index: index, socket: socket, header: header, body: body, random: &self.random)
        // A slow reader behind a tiny buffer would take minutes: tiny buffers get quick readers.
        if socket.outboundCapacity < 1024 { client.readGap = min(client.readGap, 5_100_000) }
        client.resetAt = resetAt
        self.clients.append(client)
        self.at(time) {
            guard listener.fd != nil else {
                // Nobody listens any more: the kernel refuses the connection.
                self.clientEnded(client, .refusedInQueue)
                return
            }
            listener.acceptQueue.append(socket)
            self.kernel.touch(listener)
            self.clientWrites(client)
            if let resetAt = client.resetAt { self.at(max(resetAt, self.now)) { self.clientResets(client) } }
        }
    }

    private func clientWrites(_ client: Client) {
        client.writeScheduled = false
        guard client.ended == nil else { return }
        let socket = client.socket
        if socket.fd == nil, client.acceptedAt != nil {
            // l4lb has closed its end: what the client still sends is answered with a reset.
            if client.headerSent < client.header.count || client.bodySent < client.body.count {
                self.clientEnded(client, .resetByL4LB)
            }
            return
        }
        let room = socket.inboundCapacity - socket.inbound.count
        if room > 0 {
            if client.headerSent < client.header.count {
                let count = min(client.headerChunk, room, client.header.count - client.headerSent)
                socket.inbound.append(client.header[client.headerSent..<client.headerSent + count])
                client.headerSent += count
                if client.headerSent == client.header.count { client.headerCompleteAt = self.now }
                self.kernel.touch(socket)
            } else if client.bodySent < client.body.count {
                let count = min(client.bodyChunk, room, client.body.count - client.bodySent)
                socket.inbound.append(client.body[client.bodySent..<client.bodySent + count])
                client.bodySent += count
                self.kernel.touch(socket)
            }
        }
        if client.headerSent < client.header.count || client.bodySent < client.body.count {
            if room > 0 {
                client.writeScheduled = true
                self.after(client.gap) { self.clientWrites(client) }
            }
            // Otherwise l4lb's next read makes room and schedules the write (`lbRead`).
        } else if client.finishes, !client.finSent {
            client.finSent = true
            self.after(client.gap) {
                guard client.ended == nil, !(socket.fd == nil && client.acceptedAt != nil) else { return }
                socket.peerFinished = true
                self.kernel.touch(socket)
            }
        }
    }

    /// The client reads what l4lb sent it, after its reading delay.
    private func scheduleClientRead(_ client: Client) {
        guard !client.readScheduled, client.ended == nil else { return }
        client.readScheduled = true
        self.after(client.readGap) { self.clientReads(client) }
    }

    private func clientReads(_ client: Client) {
        client.readScheduled = false
        guard client.ended == nil else { return }
        let socket = client.socket
        let bytes = socket.outbound.take(self.random.int(1...65536))
        if !bytes.isEmpty { self.kernel.touch(socket) }
        if socket.resetByL4LB {
            self.clientEnded(client, .resetByL4LB)
            return
        }
        if socket.outbound.isEmpty, socket.writeShut {
            do {
                self.clientEnded(client, .endOfStream)
                // A client that hears the end closes too, once it has sent what it had.
                client.finishes = true
                if !client.finSent, !client.writeScheduled { self.clientWrites(client) }
            }
            return
        }
        if !socket.outbound.isEmpty { self.scheduleClientRead(client) }
    }

    private func clientResets(_ client: Client) {
        guard client.ended == nil else { return }
        let socket = client.socket
        self.clientEnded(client, .resetBySelf)
        if let queued = self.listeners.first(where: { $0.acceptQueue.contains { $0 === socket } }) {
            queued.acceptQueue.removeAll { $0 === socket }
            return
        }
        guard socket.fd != nil else { return }
        socket.peerReset = true
        socket.pendingError = ECONNRESET
        socket.outbound.removeAll()
        self.kernel.touch(socket)
    }

    private func clientEnded(_ client: Client, _ end: ClientEnd) {
        self.trace("client #\(client.index) ends: \(end)")
        if client.ended == nil { client.ended = end }
    }

    // MARK: Backends

    func backendIndex(_ address: RawSocketAddress) -> Int? {
        let index = address.port - self.basePort
        return self.behaviors.indices.contains(index) ? index : nil
    }

    /// l4lb connects `socket` to `address`: the backend there answers as it behaves.
    func connecting(_ socket: SimulatedSocket, to address: RawSocketAddress, mayAnswerAtOnce: Bool) -> Int32 {
        guard let backend = self.backendIndex(address) else {
            self.violation("connect to \(address.port), which is no backend")
            return -ECONNREFUSED
        }
        let behavior = self.behaviors[backend]
        let index = self.connections.count
        self.trace("l4lb connects fd \(socket.fd ?? -1) to backend \(backend) (\(behavior)): connection #\(index)")
        let connection = BackendConnection(
            index: index,
            backend: backend,
            socket: socket,
            behavior: behavior,
            resetAfter: self.random.int(0...64)
        )
        socket.peer = .backend(index)
        socket.inboundCapacity = self.random.chance(0.3) ? self.random.int(64...1024) : self.random.int(4096...65536)
        socket.outboundCapacity = self.random.chance(0.3) ? self.random.int(64...1024) : self.random.int(4096...65536)
        self.connections.append(connection)
        let latency = UInt64(self.random.int(0...3_000)) * 1000
        switch behavior {
        case .refuse:
            self.ownFailures[backend] += 1
            if mayAnswerAtOnce, self.random.chance(0.5) {
                // Loopback refuses within the call.
                socket.connectState = .failed
                return -ECONNREFUSED
            }
            self.after(latency) {
                guard socket.fd != nil else { return }
                socket.connectState = .failed
                socket.pendingError = ECONNREFUSED
                self.kernel.touch(socket)
            }
        case .blackhole:
            self.ownFailures[backend] += 1
        case .resetBeforeAnswer:
            self.ownFailures[backend] += 1
            self.after(latency) { self.established(connection) }
        case .echo, .answerThenReset, .closeWithoutAnswer:
            self.after(latency) { self.established(connection) }
        }
        return -EINPROGRESS
    }

    func noFreePort(_ socket: SimulatedSocket) {}

    private func established(_ connection: BackendConnection) {
        let socket = connection.socket
        // A handshake that completes at the connect deadline or later did not answer in time: l4lb
        // may rightly charge it (epoll may not even have reported it by then).
        if self.now >= socket.openedAt + self.settings.connect {
            self.ownFailures[connection.backend] += 1
        }
        guard socket.fd != nil else { return }
        self.trace("backend connection #\(connection.index) established")
        socket.connectState = .established
        socket.lastTraffic = self.now
        connection.establishedAt = self.now
        self.kernel.touch(socket)
        self.scheduleBackendRead(connection)
        if connection.behavior == .resetBeforeAnswer {
            // It resets after reading its share of bytes, or soon in any case, as a crashing process does.
            self.after(UInt64(self.random.int(0...50)) * 1_000_000) {
                if !connection.ended { self.backendResets(connection) }
            }
        }
    }

    private func scheduleBackendRead(_ connection: BackendConnection) {
        guard !connection.readScheduled, !connection.ended else { return }
        connection.readScheduled = true
        self.after(UInt64(self.random.int(0...2_000)) * 1000 + 50_000) { self.backendReads(connection) }
    }

    private func backendReads(_ connection: BackendConnection) {
        connection.readScheduled = false
        guard !connection.ended else { return }
        let socket = connection.socket
        let bytes = socket.outbound.take(self.random.int(1...65536))
        connection.consumed += bytes.count
        if !bytes.isEmpty { self.kernel.touch(socket) }
        let endOfStream = socket.outbound.isEmpty && socket.writeShut
        if socket.resetByL4LB {
            connection.ended = true
            return
        }
        switch connection.behavior {
        case .echo, .answerThenReset:
            connection.echo.append(bytes)
            self.backendWrites(connection)
            if connection.behavior == .answerThenReset, connection.sent.count > connection.resetAfter {
                self.backendResets(connection)
                return
            }
        case .resetBeforeAnswer:
            if connection.consumed >= connection.resetAfter || endOfStream {
                self.backendResets(connection)
                return
            }
        case .closeWithoutAnswer:
            if !connection.finished {
                connection.finished = true
                socket.peerFinished = true
                self.kernel.touch(socket)
            }
        case .refuse, .blackhole:
            return
        }
        if endOfStream, connection.echo.isEmpty, !connection.finished {
            connection.finished = true
            socket.peerFinished = true
            self.kernel.touch(socket)
        }
        if endOfStream, connection.finished {
            connection.ended = true
            return
        }
        if !socket.outbound.isEmpty { self.scheduleBackendRead(connection) }
    }

    private func backendWrites(_ connection: BackendConnection) {
        let socket = connection.socket
        guard !connection.ended, !connection.reset, socket.fd != nil, !connection.echo.isEmpty else { return }
        let room = socket.inboundCapacity - socket.inbound.count
        guard room > 0 else { return }
        let bytes = connection.echo.take(room)
        socket.inbound.append(bytes)
        connection.sent += bytes
        self.kernel.touch(socket)
    }

    private func backendResets(_ connection: BackendConnection) {
        let socket = connection.socket
        self.trace("backend connection #\(connection.index) resets after sending \(connection.sent.count)")
        connection.reset = true
        connection.ended = true
        guard socket.fd != nil else { return }
        socket.peerReset = true
        socket.pendingError = ECONNRESET
        socket.outbound.removeAll()
        self.kernel.touch(socket)
    }

    // MARK: What l4lb did (called by the kernel)

    func accepted(_ socket: SimulatedSocket) {
        guard case .client(let index) = socket.peer else { return }
        self.trace("l4lb accepts client #\(index) as fd \(socket.fd ?? -1)")
        self.clients[index].acceptedAt = self.now
    }

    func abortedInQueue(_ socket: SimulatedSocket) {
        guard case .client(let index) = socket.peer else { return }
        self.clientEnded(self.clients[index], .refusedInQueue)
    }

    func lbRead(_ socket: SimulatedSocket, count: Int) {
        switch socket.peer {
        case .client(let index):
            let client = self.clients[index]
            if !client.writeScheduled, client.ended == nil {
                client.writeScheduled = true
                self.after(0) { self.clientWrites(client) }
            }
        case .backend(let index):
            let connection = self.connections[index]
            self.after(0) { self.backendWrites(connection) }
        case nil:
            break
        }
    }

    func observedReset(_ socket: SimulatedSocket) {
        self.trace("l4lb reads the reset of \(socket.peer.map { "\($0)" } ?? "?")")
        switch socket.peer {
        case .client(let index): self.clients[index].l4lbReadItsReset = true
        case .backend(let index): self.connections[index].l4lbReadItsReset = true
        case nil: break
        }
    }

    func lbSent(_ socket: SimulatedSocket, _ bytes: [UInt8]) {
        switch socket.peer {
        case .backend(let index):
            let connection = self.connections[index]
            self.trace("l4lb sends \(bytes.count) bytes to backend connection #\(index)")
            let offset = connection.fromL4LB
            connection.fromL4LB += bytes.count
            // The clients whose body, as sent so far, these bytes continue.
            let candidates = (connection.candidates ?? Array(self.clients.indices)).filter { owner in
                let client = self.clients[owner]
                return offset + bytes.count <= client.bodySent
                    && Self.same(client.body, at: offset, as: bytes)
            }
            if candidates.isEmpty {
                self.violation(
                    "backend connection #\(index) received bytes \(offset)..<\(offset + bytes.count) that no client sent in that order"
                )
            }
            if candidates.count == 1, connection.candidates?.count != 1 {
                self.clients[candidates[0]].carriers.append(connection)
            }
            connection.candidates = candidates
            self.scheduleBackendRead(connection)
        case .client(let index):
            let client = self.clients[index]
            self.trace("l4lb sends \(bytes.count) bytes to client #\(index)")
            // All l4lb has sent this client (read or not) must continue what one of its backends sent.
            let offset = client.sentByL4LB
            client.sentByL4LB += bytes.count
            let carried = client.carriers.contains { connection in
                offset + bytes.count <= connection.sent.count
                    && Self.same(connection.sent, at: offset, as: bytes)
            }
            if !carried {
                self.violation(
                    "client #\(index) was sent bytes \(offset)..<\(offset + bytes.count) that its backend did not send in that order"
                )
            }
            self.scheduleClientRead(client)
        case nil:
            self.violation("l4lb sent bytes on socket #\(socket.serial), which has no peer")
        }
    }

    /// Whether `stream` holds `bytes` at `offset` (memcmp: a debug build's generic compare was most
    /// of a run's time).
    static func same(_ stream: [UInt8], at offset: Int, as bytes: [UInt8]) -> Bool {
        stream.withUnsafeBytes { whole in
            bytes.withUnsafeBytes { part in
                part.count == 0 || memcmp(whole.baseAddress! + offset, part.baseAddress!, part.count) == 0
            }
        }
    }

    /// l4lb ended its side of `socket`'s stream: a FIN, or a reset.
    func lbEnded(_ socket: SimulatedSocket, reset: Bool) {
        self.trace("l4lb ends its stream to \(socket.peer.map { "\($0)" } ?? "?") with \(reset ? "a reset" : "a FIN")")
        switch socket.peer {
        case .client(let index): self.scheduleClientRead(self.clients[index])
        case .backend(let index): self.scheduleBackendRead(self.connections[index])
        case nil: break
        }
        guard !reset else { return }
        switch socket.peer {
        case .backend(let index):
            let connection = self.connections[index]
            guard !connection.reset else { return }
            guard let owner = connection.candidates?.first, connection.candidates?.count == 1 else { return }
            let client = self.clients[owner]
            if client.l4lbReadItsReset {
                self.violation("client #\(owner) reset, and its backend connection #\(index) was sent a FIN")
            } else if connection.fromL4LB != client.bodySent {
                self.violation(
                    "backend connection #\(index) was sent a FIN after \(connection.fromL4LB) of the \(client.bodySent) bytes client #\(owner) sent"
                )
            }
        case .client(let index):
            let client = self.clients[index]
            guard client.ended == nil || client.ended == .endOfStream else { return }
            let carriers = client.carriers.filter { !$0.sent.isEmpty || $0.finished || $0.reset }
            guard let carrier = carriers.last else { return }
            if carrier.l4lbReadItsReset {
                self.violation("backend connection #\(carrier.index) reset, and client #\(index) was sent a FIN")
            } else if client.sentByL4LB != carrier.sent.count {
                self.violation(
                    "client #\(index) was sent a FIN after \(client.sentByL4LB) of the \(carrier.sent.count) bytes its backend sent"
                )
            }
        case nil:
            break
        }
    }

    func lbClosed(_ socket: SimulatedSocket) {
        if case .client(let index) = socket.peer {
            let client = self.clients[index]
            if !client.writeScheduled, client.ended == nil {
                client.writeScheduled = true
                self.after(0) { self.clientWrites(client) }
            }
        }
    }
}
