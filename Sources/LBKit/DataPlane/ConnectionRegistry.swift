import Atomics
import NIOConcurrencyHelpers
import NIOCore

/// Knows every open client connection, so that shutdown can wait for them and then close the rest,
/// and enforces `--max-connections` the way HAProxy's maxconn does: at the limit the listeners stop
/// accepting, further clients wait in the kernel's listen queue, and they are accepted as soon as a
/// connection closes, instead of being refused.
///
/// Each event loop keeps its own set, touched only on that loop, so admitting and forgetting a
/// connection takes no lock; the count across loops is one relaxed atomic.
final class ConnectionRegistry: Sendable {
    struct Entry {
        var channel: Channel
        var outcome: ConnectionOutcome
    }

    private let active = ManagedAtomic<Int>(0)
    private let accepted = ManagedAtomic<Int>(0)
    private let pauses = ManagedAtomic<Int>(0)
    private let setsByLoop: [ObjectIdentifier: NIOLoopBoundBox<[ObjectIdentifier: Entry]>]
    private let loops: [any EventLoop]
    /// The most client connections open at once, or nil.
    let limit: Int?
    /// The listeners' gates, to wake when a slot frees; and whether any of them is holding back.
    private let gates = NIOLockedValueBox<[NIOLoopBound<AcceptGateHandler>]>([])
    private let anyGateHolding = ManagedAtomic<Bool>(false)

    init(loops: [any EventLoop], limit: Int? = nil) {
        self.loops = loops
        self.limit = limit
        var sets: [ObjectIdentifier: NIOLoopBoundBox<[ObjectIdentifier: Entry]>] = [:]
        for loop in loops {
            sets[ObjectIdentifier(loop)] = .makeBoxSendingValue(
                [:],
                as: [ObjectIdentifier: Entry].self,
                eventLoop: loop
            )
        }
        self.setsByLoop = sets
    }

    /// Client connections accepted and not yet closed, on all loops.
    var count: Int { self.active.load(ordering: .relaxed) }
    var acceptedTotal: Int { self.accepted.load(ordering: .relaxed) }
    /// Times accepting paused because the limit was reached.
    var pausesTotal: Int { self.pauses.load(ordering: .relaxed) }

    /// Records `channel`, on its event loop, until it closes. Returns false, recording nothing, when
    /// `limit` connections are already open.
    func admit(_ channel: Channel, outcome: ConnectionOutcome) {
        // With a limit, the listener's gate counted this connection when it accepted it, before it
        // asked for the next one; without, it is counted here.
        if self.limit == nil {
            self.active.wrappingIncrement(ordering: .relaxed)
        }
        self.accepted.wrappingIncrement(ordering: .relaxed)
        guard let set = self.setsByLoop[ObjectIdentifier(channel.eventLoop)] else {
            preconditionFailure("channel on an event loop the registry was not built for")
        }
        let key = ObjectIdentifier(channel)
        set.value[key] = Entry(channel: channel, outcome: outcome)
        channel.closeFuture.assumeIsolated().whenComplete { _ in
            outcome.whenClosed?()
            outcome.whenClosed = nil
            set.value.removeValue(forKey: key)
            self.active.wrappingDecrement(ordering: .relaxed)
            if self.anyGateHolding.load(ordering: .relaxed) {
                self.wakeGates()
            }
        }
    }

    /// Counts a connection the moment a gated listener accepts it.
    func reserveAcceptedSlot() {
        self.active.wrappingIncrement(ordering: .relaxed)
    }

    /// Whether the listeners should accept now.
    var hasFreeSlot: Bool {
        guard let limit = self.limit else { return true }
        return self.active.load(ordering: .relaxed) < limit
    }

    /// A handler for a listening channel that holds back accepting while the limit is reached.
    func makeAcceptGate(on loop: any EventLoop) -> AcceptGateHandler {
        let handler = AcceptGateHandler(registry: self)
        let bound = NIOLoopBound(handler, eventLoop: loop)
        self.gates.withLockedValue { $0.append(bound) }
        return handler
    }

    func countPause() {
        self.pauses.wrappingIncrement(ordering: .relaxed)
    }

    func gateStartedHolding() {
        self.anyGateHolding.store(true, ordering: .relaxed)
    }

    private func wakeGates() {
        guard self.hasFreeSlot else { return }
        self.anyGateHolding.store(false, ordering: .relaxed)
        for gate in self.gates.withLockedValue({ $0 }) {
            gate.eventLoop.execute { gate.value.resume() }
        }
    }

    /// Closes every open connection and returns once each loop has issued its closes.
    func closeAll() async {
        for loop in self.loops {
            guard let set = self.setsByLoop[ObjectIdentifier(loop)] else { continue }
            try? await loop.submit {
                for entry in set.value.values {
                    entry.outcome.record(.closedByL4LB)
                    entry.channel.close(promise: nil)
                }
            }.get()
        }
    }
}

/// On a listening channel: forwards `read` (accept more) only while the registry has a free slot,
/// and counts each accepted connection at once, so that the next `read` sees it even though the
/// connection is set up later on another event loop.
final class AcceptGateHandler: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny

    private let registry: ConnectionRegistry
    private var context: ChannelHandlerContext?
    private var holding = false

    init(registry: ConnectionRegistry) {
        self.registry = registry
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.registry.reserveAcceptedSlot()
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        if self.registry.hasFreeSlot {
            context.read()
        } else {
            if !self.holding { self.registry.countPause() }
            self.holding = true
            self.registry.gateStartedHolding()
        }
    }

    /// Called on this listener's loop when a connection closed somewhere.
    func resume() {
        guard self.holding, self.registry.hasFreeSlot, let context = self.context else {
            if self.holding { self.registry.gateStartedHolding() }
            return
        }
        self.holding = false
        context.read()
    }
}

@available(*, unavailable)
extension AcceptGateHandler: Sendable {}
