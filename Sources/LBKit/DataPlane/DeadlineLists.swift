/// The relay loop's timers: one list per kind of timeout (PROXY header, connect, idle), each kind
/// with one fixed duration. A connection joins the tail of a list when its timer starts, so every
/// list stays ordered by deadline, and starting, stopping or restarting a timer is O(1), with no
/// system call and no allocation (after the slot arrays grew). Expiry reads list heads only.
///
/// A restart (the idle timer, on each read or write) moves the connection to its list's tail:
/// HAProxy and libev ("be smart about timeouts") do the same.
///
/// Each connection slot is in at most one list at a time. Times are nanoseconds of a monotonic clock.
struct DeadlineLists {
    enum Kind: Int, CaseIterable {
        case proxyHeader = 0
        case connect = 1
        case idle = 2
    }

    private static let none: Int32 = -1

    /// Duration of each kind, or nil when that timeout is off.
    private let durations: [UInt64?]
    private var heads: [Int32] = [Self.none, Self.none, Self.none]
    private var tails: [Int32] = [Self.none, Self.none, Self.none]
    private var previous: [Int32] = []
    private var next: [Int32] = []
    /// The list each slot is in (a `Kind` raw value), or -1.
    private var member: [Int8] = []
    private var started: [UInt64] = []

    init(proxyHeader: UInt64?, connect: UInt64?, idle: UInt64?) {
        self.durations = [proxyHeader, connect, idle]
    }

    /// Whether timers of `kind` are on.
    func isEnabled(_ kind: Kind) -> Bool { self.durations[kind.rawValue] != nil }

    /// Makes room for slots `0..<count`.
    mutating func grow(to count: Int) {
        guard count > self.member.count else { return }
        let extra = count - self.member.count
        self.previous += repeatElement(Self.none, count: extra)
        self.next += repeatElement(Self.none, count: extra)
        self.member += repeatElement(-1, count: extra)
        self.started += repeatElement(0, count: extra)
    }

    /// Starts `slot`'s timer of `kind` at `now`, stopping any other it had. No-op for a kind that is off.
    mutating func start(_ kind: Kind, slot: Int, now: UInt64) {
        self.stop(slot: slot)
        guard self.durations[kind.rawValue] != nil else { return }
        let list = kind.rawValue
        let index = Int32(slot)
        self.member[slot] = Int8(list)
        self.started[slot] = now
        self.previous[slot] = self.tails[list]
        self.next[slot] = Self.none
        if self.tails[list] != Self.none {
            self.next[Int(self.tails[list])] = index
        } else {
            self.heads[list] = index
        }
        self.tails[list] = index
    }

    /// Restarts `slot`'s current timer at `now` (activity on an idle timer).
    mutating func restart(slot: Int, now: UInt64) {
        let list = self.member[slot]
        guard list >= 0, let kind = Kind(rawValue: Int(list)) else { return }
        if self.tails[Int(list)] == Int32(slot) {
            // Already last: only the start time moves (the common case for a busy connection).
            self.started[slot] = now
            return
        }
        self.start(kind, slot: slot, now: now)
    }

    mutating func stop(slot: Int) {
        let list = Int(self.member[slot])
        guard list >= 0 else { return }
        let before = self.previous[slot]
        let after = self.next[slot]
        if before != Self.none { self.next[Int(before)] = after } else { self.heads[list] = after }
        if after != Self.none { self.previous[Int(after)] = before } else { self.tails[list] = before }
        self.member[slot] = -1
    }

    /// The timer kind `slot` is waiting on, if any.
    func kind(of slot: Int) -> Kind? {
        Kind(rawValue: Int(self.member[slot]))
    }

    /// The earliest deadline of any running timer.
    var nextDeadline: UInt64? {
        var earliest: UInt64?
        for kind in Kind.allCases {
            let head = self.heads[kind.rawValue]
            guard head != Self.none, let duration = self.durations[kind.rawValue] else { continue }
            let deadline = self.started[Int(head)] &+ duration
            earliest = min(earliest ?? deadline, deadline)
        }
        return earliest
    }

    /// Removes and returns a slot whose timer has expired at `now`, with its kind; nil when none has.
    mutating func popExpired(now: UInt64) -> (slot: Int, kind: Kind)? {
        for kind in Kind.allCases {
            let head = self.heads[kind.rawValue]
            guard head != Self.none, let duration = self.durations[kind.rawValue] else { continue }
            if self.started[Int(head)] &+ duration <= now {
                self.stop(slot: Int(head))
                return (Int(head), kind)
            }
        }
        return nil
    }
}
