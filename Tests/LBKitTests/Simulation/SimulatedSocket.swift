import CLinux
import Glibc

@testable import LBKit

/// Bytes in one direction of a simulated connection, in order, read from the front.
struct ByteFIFO {
    private var bytes: [UInt8] = []
    private var head = 0

    var count: Int { self.bytes.count - self.head }
    var isEmpty: Bool { self.count == 0 }

    mutating func append(_ more: some Collection<UInt8>) {
        self.bytes.append(contentsOf: more)
    }

    /// Removes and returns up to `limit` bytes from the front.
    mutating func take(_ limit: Int) -> ArraySlice<UInt8> {
        let count = min(limit, self.count)
        let taken = self.bytes[self.head..<self.head + count]
        self.head += count
        if self.head > 4096, self.head * 2 > self.bytes.count {
            self.bytes.removeFirst(self.head)
            self.head = 0
        }
        return taken
    }

    mutating func removeAll() {
        self.bytes = []
        self.head = 0
    }
}

/// A file of the simulated kernel: a stream socket (l4lb's end of a TCP connection), a listening
/// socket, an epoll instance or an eventfd. One class for all, as a descriptor table holds them.
final class SimulatedSocket {
    enum Kind {
        case stream
        case listener
        case poller
        case wakeup
    }

    enum ConnectState {
        case established
        case connecting
        case failed
    }

    /// Unique for the run: what the invariants name a socket by (descriptor numbers are reused).
    let serial: Int
    let kind: Kind
    /// The descriptor l4lb holds it by; nil once closed.
    var fd: Int32?

    // A stream: `inbound` is what the peer sent and l4lb has not read; `outbound` what l4lb sent
    // and the peer has not read. Each is bounded, so writes are partial and readers push back.
    var inbound = ByteFIFO()
    var inboundCapacity = 65536
    var outbound = ByteFIFO()
    var outboundCapacity = 65536
    var peerFinished = false
    var peerReset = false
    var pendingError: Int32 = 0
    var writeShut = false
    var lingerZero = false
    /// l4lb closed it with a reset (SO_LINGER 0, or unread input at close).
    var resetByL4LB = false
    var connectState = ConnectState.established
    var peerAddress = RawSocketAddress()
    /// Which simulated peer is at the other end (set by the network).
    var peer: SimulatedNetwork.Peer?
    /// Virtual time of the last byte l4lb moved on it (a read or a write of at least one byte).
    var lastTraffic: UInt64 = 0
    var openedAt: UInt64 = 0

    // A listener.
    var acceptQueue: [SimulatedSocket] = []
    // An eventfd.
    var counter: UInt64 = 0
    // An epoll instance: its interest list, and when its loop wants to wake (nil: on events only).
    var interest: [SimulatedRegistration] = []
    /// Its own entries in interest lists (a socket is in one or two: one per loop for a listener).
    var registrations: [SimulatedRegistration] = []
    var wakeAt: UInt64? = 0
    /// When its last epoll_wait returned: the loop measures its next timeout from then, since no
    /// virtual time passes while it handles a batch.
    var lastReturn: UInt64?

    init(serial: Int, kind: Kind) {
        self.serial = serial
        self.kind = kind
    }

    /// What epoll would report for it now.
    var readiness: UInt32 {
        switch self.kind {
        case .listener:
            return self.acceptQueue.isEmpty ? 0 : EPOLLIN.rawValue
        case .wakeup:
            return self.counter > 0 ? EPOLLIN.rawValue : 0
        case .poller:
            return 0
        case .stream:
            switch self.connectState {
            case .connecting:
                return 0
            case .failed:
                return EPOLLERR.rawValue | EPOLLHUP.rawValue | EPOLLOUT.rawValue | EPOLLIN.rawValue
                    | EPOLLRDHUP.rawValue
            case .established:
                var mask: UInt32 = 0
                if !self.inbound.isEmpty || self.peerFinished || self.peerReset { mask |= EPOLLIN.rawValue }
                if self.peerFinished || self.peerReset { mask |= EPOLLRDHUP.rawValue }
                if self.pendingError != 0 { mask |= EPOLLERR.rawValue }
                if self.peerReset || (self.peerFinished && self.writeShut) { mask |= EPOLLHUP.rawValue }
                if self.outbound.count < self.outboundCapacity || self.peerReset { mask |= EPOLLOUT.rawValue }
                return mask
            }
        }
    }
}

/// One entry of an epoll interest list.
final class SimulatedRegistration {
    let socket: SimulatedSocket
    unowned let poller: SimulatedSocket
    let fd: Int32
    var token: UInt64
    var events: UInt32
    /// Edge-triggered: reported only after a change since it was last reported.
    let edgeTriggered: Bool
    var pending = true

    init(socket: SimulatedSocket, poller: SimulatedSocket, fd: Int32, token: UInt64, events: UInt32) {
        self.socket = socket
        self.poller = poller
        self.fd = fd
        self.token = token
        self.events = events
        self.edgeTriggered = events & EPOLLET.rawValue != 0
    }
}
