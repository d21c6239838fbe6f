import CLinux
import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The I/O of one connection: what the loop does for each socket event and each of the machine's
/// actions. Every function takes the slot index and re-reads the slot after anything that may
/// have ended the connection (`isAlive`), because ending it recycles the slot.
///
/// Which timer runs, when the backend has answered and when too many bytes are kept for a replay
/// are the machine's decisions; this code reports what the sockets did and carries out the rest.
extension RelayLoop {
    /// Feeds `event` to the slot's machine and carries out what it returns.
    func handle(_ event: RelayMachine.Event, slot: Int) {
        guard self.slots[slot].inUse else { return }
        let actions = self.slots[slot].machine.handle(event)
        self.perform(actions, slot: slot)
    }

    /// The machine's word on whether traffic restarts the running timer (only the idle timer does).
    @inline(__always)
    private func restartsTimerOnTraffic(slot: Int) -> Bool {
        #if DEBUG
        if self.plantedBugs.contains(.trafficRestartsEveryTimer) { return true }
        #endif
        return self.slots[slot].machine.restartsTimerOnTraffic
    }

    private func isAlive(_ slot: Int, _ generation: UInt32) -> Bool {
        self.slots[slot].inUse && self.slots[slot].generation == generation
    }

    private func perform(_ actions: RelayMachine.Actions, slot: Int) {
        if let health = actions.health {
            self.report(health, slot: slot)
        }
        if actions.dropKeptBytes {
            self.slots[slot].toBackend.dropSent()
        }
        if actions.shutdownBackendWrite {
            SocketCalls.shutdownWrite(self.kernel, self.slots[slot].backendFD)
        }
        if actions.shutdownClientWrite {
            self.clientShutdowns.put(slot: slot, generation: self.slots[slot].generation)
        }
        if let end = actions.end {
            self.finish(slot: slot, end)
            return
        }
        if let timer = actions.timer {
            self.deadlines.start(timer, slot: slot, now: self.now)
        }
        switch actions.start {
        case nil, .awaitProxyHeader:
            // The PROXY header's timer is started above; the client is read as soon as it sends.
            break
        case .pickBackend:
            self.connectToBackend(slot: slot)
        case .retryElsewhere:
            self.abandonBackend(slot: slot)
            self.slots[slot].toBackend.rewind()
            self.connectToBackend(slot: slot)
        case .relay:
            // Sends what the client sent while the backend was connecting (and the PROXY header).
            self.flush(toward: .backend, slot: slot)
        }
    }

    /// Passes on the client FINs put off in the turn before this one, for connections still open.
    ///
    /// Why they wait: with a request-response client that closes once it has the response (HTTP
    /// with `Connection: close`), the backend's response and FIN arrive together, the response goes
    /// out, and the client's own FIN usually follows before the loop looks again. The connection
    /// then simply closes, and the `shutdown` call that would have passed the backend's FIN on is
    /// never made (HAProxy makes 0.3 per such connection, l4lb made 1). A client that stays open
    /// gets the FIN one turn of the loop later, the turn made at once (no wait).
    func passOnClientShutdowns() {
        self.clientShutdowns.due { slot, generation in
            guard self.slots[slot].inUse, self.slots[slot].generation == generation else { return }
            SocketCalls.shutdownWrite(self.kernel, self.slots[slot].clientFD)
        }
    }

    // MARK: Socket events

    func socketEvent(_ events: UInt32, side: RelayMachine.Side, slot: Int) {
        let generation = self.slots[slot].generation
        if side == .backend, self.slots[slot].machine.phase == .connecting {
            self.backendConnectEvent(events, slot: slot)
        } else if events & EPOLLERR.rawValue != 0 {
            // The error first: reading it clears it, and then a read returns what came before it.
            let code = SocketCalls.pendingError(
                self.kernel,
                side == .client ? self.slots[slot].clientFD : self.slots[slot].backendFD
            )
            if side == .backend { self.noteAnswerBeforeFailure(slot: slot) }
            self.handle(.failed(side, reset: code == ECONNRESET || code == EPIPE), slot: slot)
            return
        } else {
            let input = EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue
            let finished = EPOLLRDHUP.rawValue | EPOLLHUP.rawValue
            switch side {
            case .client:
                if events & input != 0 { self.slots[slot].clientReadable = true }
                if events & finished != 0 { self.slots[slot].clientFinArrived = true }
            case .backend:
                if events & input != 0 { self.slots[slot].backendReadable = true }
                if events & finished != 0 { self.slots[slot].backendFinArrived = true }
            }
            if events & EPOLLOUT.rawValue != 0 {
                self.flush(toward: side, slot: slot)
            }
        }
        guard self.isAlive(slot, generation) else { return }
        self.pump(slot: slot)
    }

    /// Reads whatever each side may send now, until both are drained or held back.
    private func pump(slot: Int) {
        let generation = self.slots[slot].generation
        self.read(from: .client, slot: slot)
        guard self.isAlive(slot, generation) else { return }
        self.read(from: .backend, slot: slot)
        guard self.isAlive(slot, generation) else { return }
        // Reading the backend may have drained the queue toward it and so released the client.
        if self.slots[slot].clientReadable, self.slots[slot].machine.mayRead(from: .client) {
            self.read(from: .client, slot: slot)
        }
    }

    private func backendConnectEvent(_ events: UInt32, slot: Int) {
        if events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
            let code = SocketCalls.pendingError(self.kernel, self.slots[slot].backendFD)
            self.handle(.connectFailed(SocketCalls.failureKind(errno: code == 0 ? ECONNRESET : code)), slot: slot)
            return
        }
        guard events & EPOLLOUT.rawValue != 0 else { return }
        // Connected: no getsockopt needed, EPOLLOUT without EPOLLERR says so.
        if events & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue) != 0 { self.slots[slot].backendReadable = true }
        if events & EPOLLRDHUP.rawValue != 0 { self.slots[slot].backendFinArrived = true }
        self.handle(.connected(keptBytes: self.slots[slot].toBackend.storedCount), slot: slot)
    }

    // MARK: Reading

    private func read(from side: RelayMachine.Side, slot: Int) {
        let generation = self.slots[slot].generation
        while self.isAlive(slot, generation), self.slots[slot].machine.mayRead(from: side),
            side == .client ? self.slots[slot].clientReadable : self.slots[slot].backendReadable
        {
            var capacity = Self.scratchSize
            let phase = self.slots[slot].machine.phase
            if side == .client, phase == .connecting || phase == .awaitingProxyHeader {
                // Kept until the backend is up: bounded, then reading pauses (TCP slows the client).
                capacity = min(capacity, self.shared.maxPendingBytes - self.slots[slot].toBackend.storedCount)
                if capacity <= 0 { return }
            }
            let fd = side == .client ? self.slots[slot].clientFD : self.slots[slot].backendFD
            switch SocketCalls.receive(self.kernel, fd, into: self.scratch, capacity: capacity) {
            case .success(0):
                self.setReadable(side, false, slot: slot)
                self.endOfInput(side, slot: slot)
                return
            case .success(let count):
                // A short read emptied the socket: with edge triggering, more input brings a new event.
                let drained = count < capacity
                if drained { self.setReadable(side, false, slot: slot) }
                if self.restartsTimerOnTraffic(slot: slot) {
                    self.deadlines.restart(slot: slot, now: self.now)
                }
                self.received(count, from: side, slot: slot)
                let finArrived =
                    side == .client ? self.slots[slot].clientFinArrived : self.slots[slot].backendFinArrived
                if drained, finArrived, self.isAlive(slot, generation) {
                    // The FIN came before these bytes were read: the stream ends here, no read of 0 needed.
                    self.endOfInput(side, slot: slot)
                    return
                }
            case .failure(.wouldBlock):
                self.setReadable(side, false, slot: slot)
                return
            case .failure(let failure):
                self.handle(.failed(side, reset: failure == .reset), slot: slot)
                return
            }
        }
    }

    private func setReadable(_ side: RelayMachine.Side, _ readable: Bool, slot: Int) {
        switch side {
        case .client: self.slots[slot].clientReadable = readable
        case .backend: self.slots[slot].backendReadable = readable
        }
    }

    private func endOfInput(_ side: RelayMachine.Side, slot: Int) {
        if side == .client, self.slots[slot].machine.phase == .awaitingProxyHeader {
            self.refuseProxyHeader(slot: slot, reason: "client closed before sending a PROXY protocol header")
            return
        }
        self.handle(.endOfInput(side), slot: slot)
    }

    private func received(_ count: Int, from side: RelayMachine.Side, slot: Int) {
        let bytes = UnsafeRawBufferPointer(start: self.scratch, count: count)
        switch side {
        case .client:
            self.slots[slot].bytesFromClient &+= UInt64(count)
            switch self.slots[slot].machine.phase {
            case .awaitingProxyHeader:
                self.slots[slot].toBackend.append(bytes)
                self.parseProxyHeader(slot: slot)
            case .connecting:
                self.slots[slot].toBackend.append(bytes)
            case .trial, .relaying:
                self.deliver(bytes, toward: .backend, slot: slot)
            case .closed:
                break
            }
        case .backend:
            if self.slots[slot].machine.awaitsBackendAnswer {
                self.handle(.backendAnswered, slot: slot)
                guard self.slots[slot].inUse else { return }
            }
            self.slots[slot].bytesFromBackend &+= UInt64(count)
            self.deliver(bytes, toward: .client, slot: slot)
        }
    }

    // MARK: Writing

    /// Sends `bytes` to `side` straight from the loop's buffer; queues what the socket does not take
    /// (and, during a trial, everything, for a replay).
    private func deliver(_ bytes: UnsafeRawBufferPointer, toward side: RelayMachine.Side, slot: Int) {
        let keep = side == .backend && self.slots[slot].machine.keepsSentBytes
        let queued = side == .client ? self.slots[slot].toClient.hasUnsent : self.slots[slot].toBackend.hasUnsent
        if keep || queued {
            self.appendToQueue(bytes, side: side, slot: slot)
            let generation = self.slots[slot].generation
            self.flush(toward: side, slot: slot)
            if keep, self.isAlive(slot, generation), self.slots[slot].machine.keepsSentBytes {
                self.handle(.keptBytes(self.slots[slot].toBackend.storedCount), slot: slot)
            }
            return
        }
        let fd = side == .client ? self.slots[slot].clientFD : self.slots[slot].backendFD
        switch SocketCalls.send(self.kernel, fd, bytes) {
        case .success(let written):
            if written < bytes.count {
                self.appendToQueue(UnsafeRawBufferPointer(rebasing: bytes[written...]), side: side, slot: slot)
                self.handle(.writeBlocked(side), slot: slot)
            }
        case .failure(let failure):
            if side == .backend { self.noteAnswerBeforeFailure(slot: slot) }
            self.handle(.failed(side, reset: failure == .reset), slot: slot)
        }
    }

    /// A backend that fails while on trial may have answered first: bytes it sent before its reset
    /// wait unread (Linux reads them before it reports the reset). It answered, so it is not charged
    /// and the client is not replayed elsewhere, where its request would run twice.
    private func noteAnswerBeforeFailure(slot: Int) {
        guard self.slots[slot].machine.awaitsBackendAnswer, self.slots[slot].backendFD >= 0 else { return }
        if case .success(let count) = SocketCalls.receive(
            self.kernel,
            self.slots[slot].backendFD,
            into: self.scratch,
            capacity: Self.scratchSize
        ), count > 0 {
            self.handle(.backendAnswered, slot: slot)
        }
    }

    private func appendToQueue(_ bytes: UnsafeRawBufferPointer, side: RelayMachine.Side, slot: Int) {
        switch side {
        case .client: self.slots[slot].toClient.append(bytes)
        case .backend: self.slots[slot].toBackend.append(bytes)
        }
    }

    /// Writes what is queued for `side`, and tells the machine whether the queue drained.
    private func flush(toward side: RelayMachine.Side, slot: Int) {
        let fd = side == .client ? self.slots[slot].clientFD : self.slots[slot].backendFD
        let unsent = side == .client ? self.slots[slot].toClient.unsent : self.slots[slot].toBackend.unsent
        guard fd >= 0, unsent.count > 0 else {
            if fd >= 0 { self.handle(.drained(side), slot: slot) }
            return
        }
        switch SocketCalls.send(self.kernel, fd, unsent) {
        case .success(let written):
            let left: Bool
            switch side {
            case .client:
                self.slots[slot].toClient.markSent(written, keep: false)
                left = self.slots[slot].toClient.hasUnsent
            case .backend:
                self.slots[slot].toBackend.markSent(written, keep: self.slots[slot].machine.keepsSentBytes)
                left = self.slots[slot].toBackend.hasUnsent
            }
            if written > 0, self.restartsTimerOnTraffic(slot: slot) {
                self.deadlines.restart(slot: slot, now: self.now)
            }
            self.handle(left ? .writeBlocked(side) : .drained(side), slot: slot)
        case .failure(let failure):
            if side == .backend { self.noteAnswerBeforeFailure(slot: slot) }
            self.handle(.failed(side, reset: failure == .reset), slot: slot)
        }
    }

    // MARK: Backends

    private func connectToBackend(slot: Int) {
        if self.slots[slot].table == nil {
            // One table for every attempt of this client: the exclusions are indices into its pool.
            self.slots[slot].table = self.shared.router.table
        }
        guard let table = self.slots[slot].table else { preconditionFailure("no routing table") }
        if self.shared.router.panic.isOn {
            // Every backend is retired, a live one among them perhaps: try each before refusing.
            self.slots[slot].machine.allowAttempts(atLeast: table.pool.count)
        }
        guard let index = table.selector.pick(for: self.slots[slot].client, excluding: self.slots[slot].excluded)
        else {
            self.handle(.noBackendAvailable, slot: slot)
            return
        }
        guard index >= 0, index < table.pool.count else {
            preconditionFailure("policy \(table.policy.name) picked index \(index) of a pool of \(table.pool.count)")
        }
        let backend = table.pool[index]
        table.picks.wrappingIncrement(ordering: .relaxed)
        if self.slots[slot].backendsTried == 0, let shadow = table.shadow {
            shadow.observe(self.slots[slot].client, active: index, excluding: self.slots[slot].excluded)
        }
        backend.counters.connectionStarted()
        table.policy.connectionOpened(to: backend)
        self.slots[slot].backend = backend
        self.slots[slot].backendIndex = index
        self.slots[slot].backendsTried += 1
        if self.slots[slot].backendsTried == 1, let version = self.shared.sendProxyProtocol {
            self.prependProxyHeader(version, slot: slot)
        }
        switch SocketCalls.connect(self.kernel, to: backend.rawAddress) {
        case .inProgress(let fd):
            self.slots[slot].backendFD = fd
            guard self.register(fd, slot: slot, side: .backend) else {
                self.handle(.localResourcesExhausted, slot: slot)
                return
            }
        case .connected(let fd):
            self.slots[slot].backendFD = fd
            guard self.register(fd, slot: slot, side: .backend) else {
                self.handle(.localResourcesExhausted, slot: slot)
                return
            }
            self.handle(.connected(keptBytes: self.slots[slot].toBackend.storedCount), slot: slot)
        case .failed(.outOfResources):
            self.shared.resourceLog.warning(
                self.shared.logger,
                "out of file descriptors: cannot open a backend connection; closing the client",
                metadata: ["client": "\(self.slots[slot].client)"]
            )
            self.handle(.localResourcesExhausted, slot: slot)
        case .failed(.noFreePorts):
            // l4lb's shortage, not the backend's: nothing is charged to it (HAProxy's "no free ports").
            self.shared.countNoFreePorts()
            self.shared.portLog.warning(
                self.shared.logger,
                "no free local port for a backend connection; closing the client (widen net.ipv4.ip_local_port_range, or add backend addresses)",
                metadata: ["backend": "\(backend)", "client": "\(self.slots[slot].client)"]
            )
            self.handle(.localResourcesExhausted, slot: slot)
        case .failed(let failure):
            let kind: BackendHealthMachine.FailureKind
            if case .other(let code) = failure { kind = SocketCalls.failureKind(errno: code) } else { kind = .reset }
            self.handle(.connectFailed(kind), slot: slot)
        }
    }

    private func prependProxyHeader(_ version: ProxyProtocolEncoder.Version, slot: Int) {
        let listener = self.listeners[self.slots[slot].listener]
        // Only a wildcard listener needs to ask which of its addresses the client reached.
        let local =
            listener.wildcard
            ? ClientAddress(self.kernel.localAddress(self.slots[slot].clientFD) ?? listener.local)
            : ClientAddress(listener.local)
        let header = ProxyProtocolEncoder.header(version, client: self.slots[slot].client, local: local)
        var queue = ByteQueue()
        header.withUnsafeBytes { queue.append($0) }
        queue.append(self.slots[slot].toBackend.unsent)
        self.slots[slot].toBackend = queue
    }

    /// Tells health about the backend in use, and counts its failures.
    private func report(_ signal: RelayMachine.Actions.HealthSignal, slot: Int) {
        guard let backend = self.slots[slot].backend else { return }
        switch signal {
        case .succeeded:
            self.shared.health.connectSucceeded(backend)
        case .connectFailed(let kind):
            backend.counters.connectFailed()
            self.shared.health.connectFailed(backend, kind: kind)
            self.shared.connectFailureLog.warning(
                self.shared.logger,
                kind == .reset && self.slots[slot].machine.phase != .closed
                    ? "backend failed before answering; trying another" : "connect to backend failed",
                metadata: [
                    "backend": "\(backend)", "error": "\(kind)", "attempt": "\(self.slots[slot].machine.attempts)",
                ]
            )
        }
    }

    /// Lets go of the backend in use (its connect or trial failed): the client moves on.
    private func abandonBackend(slot: Int) {
        guard let backend = self.slots[slot].backend else { return }
        if self.slots[slot].backendFD >= 0 {
            SocketCalls.close(self.kernel, self.slots[slot].backendFD)
            self.slots[slot].backendFD = -1
        }
        // Events still queued for the closed socket are dropped, not taken for the next attempt's.
        var forgetsRegistration = true
        #if DEBUG
        forgetsRegistration = !self.plantedBugs.contains(.retryKeepsRegistration)
        #endif
        if forgetsRegistration { self.slots[slot].backendRegistration = 0 }
        backend.counters.connectionEnded()
        self.slots[slot].table?.policy.connectionClosed(to: backend)
        self.slots[slot].excluded.insert(self.slots[slot].backendIndex)
        self.slots[slot].backend = nil
        self.slots[slot].backendIndex = -1
        self.slots[slot].backendReadable = false
        self.slots[slot].backendFinArrived = false
    }

    // MARK: PROXY protocol

    private func parseProxyHeader(slot: Int) {
        let verdict = ProxyProtocolHeader.parse(ByteBuffer(bytes: self.slots[slot].toBackend.unsent).readableBytesView)
        switch verdict {
        case .needMoreBytes:
            return
        case .invalid(let reason):
            self.refuseProxyHeader(slot: slot, reason: reason)
        case .header(let client, let length):
            self.slots[slot].toBackend.discardFront(length)
            if let client { self.slots[slot].client = client }
            self.handle(.proxyHeaderReceived, slot: slot)
        }
    }

    func refuseProxyHeader(slot: Int, reason: String) {
        self.shared.proxyHeaderLog.warning(
            self.shared.logger,
            "closing client: \(reason)",
            metadata: ["peer": "\(self.slots[slot].client)"]
        )
        self.handle(.proxyHeaderRefused, slot: slot)
    }

    // MARK: The end

    private func finish(slot: Int, _ end: RelayMachine.Actions.End) {
        let reason: RelayMachine.CloseReason
        let abort: Bool
        switch end {
        case .close(let given): (reason, abort) = (given, false)
        case .abort(let given): (reason, abort) = (given, true)
        }
        let connected = reason != .noBackend && reason != .localError
        if let backend = self.slots[slot].backend {
            backend.counters.connectionEnded()
            if connected {
                backend.counters.relayed(
                    fromClient: self.slots[slot].bytesFromClient,
                    fromBackend: self.slots[slot].bytesFromBackend
                )
            }
            self.slots[slot].table?.policy.connectionClosed(to: backend)
        }
        if reason == .noBackend {
            let exhausted = self.slots[slot].machine.attempts >= self.slots[slot].machine.attemptLimit
            self.shared.noBackendLog.warning(
                self.shared.logger,
                "closing client: \(exhausted ? "connect attempts exhausted" : "no backend available")",
                metadata: [
                    "client": "\(self.slots[slot].client)", "pool": "\(self.slots[slot].table?.pool.count ?? 0)",
                ]
            )
        }
        if !self.shared.observers.isEmpty {
            let record = ConnectionRecord(
                client: self.slots[slot].client,
                backend: connected ? self.slots[slot].backend?.address : nil,
                bytesFromClient: self.slots[slot].bytesFromClient,
                bytesFromBackend: self.slots[slot].bytesFromBackend,
                duration: .nanoseconds(Int64(truncatingIfNeeded: self.now &- self.slots[slot].acceptedAt)),
                reason: reason,
                retries: max(0, self.slots[slot].backendsTried - 1)
            )
            for observer in self.shared.observers { observer.connectionClosed(record) }
        }
        // Closed after the accounting and the access-log line, so that the observers have it by the time a
        // peer sees the connection end.
        let clientFD = self.slots[slot].clientFD
        let backendFD = self.slots[slot].backendFD
        if abort {
            SocketCalls.closeWithReset(self.kernel, clientFD)
            if backendFD >= 0 { SocketCalls.closeWithReset(self.kernel, backendFD) }
        } else {
            SocketCalls.close(self.kernel, clientFD)
            if backendFD >= 0 { SocketCalls.close(self.kernel, backendFD) }
        }
        self.recycle(slot: slot)
    }
}
