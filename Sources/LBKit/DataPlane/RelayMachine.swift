/// The life of one proxied connection as a pure state machine: the relay loop tells it what the
/// sockets did, and carries out the actions it returns. It touches no socket, buffer or clock, so
/// every edge of a connection (half-close, a reset before the backend's first byte, a retry, a
/// timeout) is tested without a network (RelayMachineTests).
///
/// The phases, in order:
/// 1. `awaitingProxyHeader` (with `--accept-proxy-protocol` only): client bytes are collected until
///    the header parses.
/// 2. `connecting`: a backend was picked and its connect is in flight; client bytes are kept.
/// 3. `trial`: connected, relaying, and the backend has not answered yet. Every byte sent to it is
///    still kept, so that a reset now moves the client to another backend with those bytes replayed.
/// 4. `relaying`: the client stays with this backend whatever happens.
/// 5. `closed`.
///
/// Half-close: an EOF from one side becomes a write shutdown of the other once the bytes queued
/// toward it have gone out; when both sides have ended and both queues are empty the connection
/// closes (close sends the last FIN, so no shutdown is issued for it).
///
/// Timers: the machine says which one runs (`Actions.timer`), and only the idle timer restarts on
/// traffic (`restartsTimerOnTraffic`). The PROXY-header and connect deadlines are absolute, as
/// HAProxy's handshake and connect timeouts are: a client that trickles bytes cannot hold a slot
/// past them, nor keep a dead backend from being charged.
struct RelayMachine: Sendable {
    typealias Timer = DeadlineLists.Kind

    enum Phase: Equatable, Sendable {
        case awaitingProxyHeader
        case connecting
        case trial
        case relaying
        case closed
    }

    enum Side: Equatable, Sendable {
        case client
        case backend
    }

    /// Why a connection ended.
    typealias CloseReason = ConnectionCloseReason

    /// How a failed connect failed: health counts a refusal at once, timeouts and resets in a row.
    typealias FailureKind = BackendHealthMachine.FailureKind

    enum Event: Equatable, Sendable {
        /// The client was accepted.
        case accepted
        /// The PROXY protocol header parsed; the client address is known.
        case proxyHeaderReceived
        /// The header was malformed, did not come in time, or the client ended without one.
        case proxyHeaderRefused
        /// The selector found no backend to pick.
        case noBackendAvailable
        /// The backend's handshake completed. `keptBytes`: client bytes waiting to go to it.
        case connected(keptBytes: Int)
        /// The backend connect failed (refused, timed out, reset).
        case connectFailed(FailureKind)
        /// l4lb could not open a socket for the backend (out of descriptors): not the backend's fault.
        case localResourcesExhausted
        /// The backend sent bytes (the loop reports it while `awaitsBackendAnswer`).
        case backendAnswered
        /// Client bytes kept for a replay now number `count` (reported during the trial): past
        /// `maxKeptBytes` there are too many to replay, and the client stays with this backend.
        case keptBytes(Int)
        /// `side` sent FIN.
        case endOfInput(Side)
        /// A write toward `side` could not take every byte: bytes are queued for it.
        case writeBlocked(Side)
        /// The bytes queued toward `side` have all gone out.
        case drained(Side)
        /// `side` reset the connection, or a read or write on it failed.
        case failed(Side, reset: Bool)
        case connectTimedOut
        /// No byte either way for the idle timeout. `unacknowledged`: the kernel still holds bytes
        /// sent to a peer that has not taken them (a peer that stopped reading).
        case idleTimedOut(unacknowledged: Bool)
        /// l4lb is shutting down and the drain timeout passed.
        case closeRequested(unacknowledged: Bool)
    }

    /// What the relay loop must do, in this order.
    struct Actions: Equatable, Sendable {
        enum Start: Equatable, Sendable {
            /// Collect the PROXY header (arm the header timer, read the client).
            case awaitProxyHeader
            /// Pick a backend (avoiding those already tried) and connect to it.
            case pickBackend
            /// The backend failed before answering: close its socket, then pick another backend and
            /// resend every byte kept (and the client's EOF, if it came).
            case retryElsewhere
            /// The backend is connected: send the kept bytes; keep them for a replay if `keepForReplay`.
            case relay(keepForReplay: Bool)
        }

        enum End: Equatable, Sendable {
            /// Close both sockets; a FIN reaches whoever is still open.
            case close(CloseReason)
            /// Close both sockets with a reset, so that neither peer takes a truncated stream for a
            /// complete one.
            case abort(CloseReason)
        }

        /// What health hears about the backend in use.
        enum HealthSignal: Equatable, Sendable {
            case connectFailed(FailureKind)
            case succeeded
        }

        var start: Start?
        /// Start this timer, replacing the one that runs (each connection has at most one).
        var timer: Timer?
        var health: HealthSignal?
        /// The trial is over: drop the bytes kept for a replay.
        var dropKeptBytes = false
        var shutdownBackendWrite = false
        var shutdownClientWrite = false
        var end: End?

        static let none = Actions()
    }

    struct Settings: Equatable, Sendable {
        var waitsForProxyHeader = false
        /// Backends tried for one client, the first included.
        var connectAttempts = 3
        /// Move a client whose backend resets before answering, replaying its bytes.
        var retryOnReset = true
        /// Most client bytes kept for a replay.
        var maxKeptBytes = 256 * 1024
    }

    let settings: Settings
    private(set) var phase: Phase = .awaitingProxyHeader
    /// Backends picked so far for this client.
    private(set) var attempts = 0
    /// The first reason seen wins.
    private(set) var reason: CloseReason?
    private var inputEnded: (client: Bool, backend: Bool) = (false, false)
    private var queued: (client: Bool, backend: Bool) = (false, false)
    private var writeShut: (client: Bool, backend: Bool) = (false, false)
    private var backendHasAnswered = false
    /// A backend reset after taking the client's bytes: whatever follows, the client must not
    /// get a FIN for an answer that never came.
    private var backendResetBeforeAnswer = false
    /// Backends this client may try: `connectAttempts`, or more in panic mode (`allowAttempts`).
    private(set) var attemptLimit: Int
    /// The timer the loop runs for this connection.
    private(set) var runningTimer: Timer?

    init(settings: Settings) {
        self.settings = settings
        self.attemptLimit = settings.connectAttempts
    }

    /// Lets this client try up to `count` backends: in panic mode every backend of the pool is
    /// retired, including any that is alive again and waiting for its probe, so the client may try
    /// each once before it is refused ("while one backend is alive no client sees a failure").
    mutating func allowAttempts(atLeast count: Int) {
        self.attemptLimit = max(self.attemptLimit, count)
    }

    /// Whether the loop may read from `side` now: a side is read only while nothing is queued toward
    /// its partner (back-pressure), and the client also while the connection is being set up (the
    /// loop bounds what it keeps).
    func mayRead(from side: Side) -> Bool {
        switch (self.phase, side) {
        case (.closed, _): return false
        case (.awaitingProxyHeader, .client), (.connecting, .client): return !self.inputEnded.client
        case (.awaitingProxyHeader, .backend), (.connecting, .backend): return false
        case (.trial, .client), (.relaying, .client): return !self.inputEnded.client && !self.queued.backend
        case (.trial, .backend), (.relaying, .backend): return !self.inputEnded.backend && !self.queued.client
        }
    }

    /// Whether bytes sent to the backend must still be kept for a replay.
    var keepsSentBytes: Bool { self.phase == .trial }

    /// Whether bytes moving either way restart the connection's timer: only the idle timer does.
    var restartsTimerOnTraffic: Bool { self.runningTimer == .idle }

    /// Whether the loop must report the backend's bytes (`backendAnswered`): until its first.
    var awaitsBackendAnswer: Bool { !self.backendHasAnswered && (self.phase == .trial || self.phase == .relaying) }

    var isClosed: Bool { self.phase == .closed }

    /// Bytes wait for a side that is not taking them. Closing such a connection with a FIN would leave
    /// the kernel holding the socket (and its unsent bytes) until its retries give up, and the peer
    /// would never hear of it: it is reset instead.
    private var stuck: Bool { self.queued.client || self.queued.backend }

    mutating func handle(_ event: Event) -> Actions {
        guard self.phase != .closed else { return .none }
        var actions = Actions()
        switch event {
        case .accepted:
            guard self.phase == .awaitingProxyHeader else { preconditionFailure("accepted twice") }
            if self.settings.waitsForProxyHeader {
                actions.start = .awaitProxyHeader
                self.startTimer(.proxyHeader, into: &actions)
            } else {
                self.pickBackend(into: &actions)
            }
        case .proxyHeaderReceived:
            guard self.phase == .awaitingProxyHeader else { preconditionFailure("PROXY header after set-up") }
            self.pickBackend(into: &actions)
        case .proxyHeaderRefused:
            self.end(.close(.proxyHeaderInvalid), into: &actions)
        case .noBackendAvailable:
            self.refuse(into: &actions)
        case .connected(let keptBytes):
            guard self.phase == .connecting else { preconditionFailure("connected while \(self.phase)") }
            let canRetry =
                self.settings.retryOnReset && self.attempts < self.attemptLimit
                && keptBytes <= self.settings.maxKeptBytes
            self.phase = canRetry ? .trial : .relaying
            self.writeShut.backend = false
            self.queued.backend = keptBytes > 0
            actions.start = .relay(keepForReplay: canRetry)
            self.startTimer(.idle, into: &actions)
        case .connectFailed(let kind):
            guard self.phase == .connecting else { preconditionFailure("connect failed while \(self.phase)") }
            actions.health = .connectFailed(kind)
            self.retryOrRefuse(into: &actions)
        case .connectTimedOut:
            guard self.phase == .connecting else { return .none }
            actions.health = .connectFailed(.timeout)
            self.retryOrRefuse(into: &actions)
        case .localResourcesExhausted:
            self.end(.abort(.localError), into: &actions)
        case .backendAnswered:
            if !self.backendHasAnswered {
                self.backendHasAnswered = true
                actions.health = .succeeded
            }
            self.commitTrial(into: &actions)
        case .keptBytes(let count):
            if count > self.settings.maxKeptBytes {
                self.commitTrial(into: &actions)
            }
        case .endOfInput(let side):
            self.endOfInput(side, into: &actions)
        case .writeBlocked(let side):
            self.setQueued(side, true)
        case .drained(let side):
            self.setQueued(side, false)
        case .failed(let side, let reset):
            self.failed(side, reset: reset, into: &actions)
        // Bytes stuck toward a peer, in l4lb's queue or in the kernel's: a FIN would wait behind
        // them for good, so the connection is reset and the peer hears of it at once.
        case .idleTimedOut(let unacknowledged):
            let stuck = self.stuck || unacknowledged
            self.end(stuck ? .abort(.idleTimeout) : .close(.idleTimeout), into: &actions)
        case .closeRequested(let unacknowledged):
            let stuck = self.stuck || unacknowledged
            self.end(stuck ? .abort(.closedByL4LB) : .close(.closedByL4LB), into: &actions)
        }
        if actions.end == nil {
            self.settle(into: &actions)
        }
        return actions
    }

    private mutating func pickBackend(into actions: inout Actions) {
        self.attempts += 1
        self.phase = .connecting
        actions.start = .pickBackend
        // Each attempt has its own connect deadline, from its start; client bytes never move it.
        self.startTimer(.connect, into: &actions)
    }

    private mutating func startTimer(_ timer: Timer, into actions: inout Actions) {
        self.runningTimer = timer
        actions.timer = timer
    }

    private mutating func retryOrRefuse(into actions: inout Actions) {
        if self.attempts < self.attemptLimit {
            self.pickBackend(into: &actions)
            actions.start = .retryElsewhere
        } else {
            self.refuse(into: &actions)
        }
    }

    /// No backend will take the client. A FIN tells a client that never reached one that it was
    /// turned away; but once a backend took its bytes and reset, a FIN would read as a complete,
    /// empty answer, so the client is reset.
    private mutating func refuse(into actions: inout Actions) {
        self.end(self.backendResetBeforeAnswer ? .abort(.noBackend) : .close(.noBackend), into: &actions)
    }

    private mutating func commitTrial(into actions: inout Actions) {
        guard self.phase == .trial else { return }
        self.phase = .relaying
        actions.dropKeptBytes = true
    }

    private mutating func endOfInput(_ side: Side, into actions: inout Actions) {
        switch side {
        case .client:
            if self.phase == .awaitingProxyHeader {
                self.end(.close(.proxyHeaderInvalid), into: &actions)
                return
            }
            self.inputEnded.client = true
            self.record(.clientClosed)
        case .backend:
            guard self.phase == .trial || self.phase == .relaying else { return }
            // A backend that closes cleanly has answered, with nothing: the client stays.
            self.backendHasAnswered = true
            self.commitTrial(into: &actions)
            self.inputEnded.backend = true
            self.record(.backendClosed)
        }
    }

    private mutating func failed(_ side: Side, reset: Bool, into actions: inout Actions) {
        switch side {
        case .client:
            self.end(.abort(.clientError), into: &actions)
        case .backend:
            guard self.phase == .trial || self.phase == .relaying else {
                preconditionFailure("backend failure reported while \(self.phase)")
            }
            if reset, !self.backendHasAnswered {
                // Accepted, then reset before a byte: a failed connect in all but name (a crashed
                // process behind a listening socket, a full accept queue).
                actions.health = .connectFailed(.reset)
                self.backendResetBeforeAnswer = true
                if self.phase == .trial {
                    self.pickBackend(into: &actions)
                    actions.start = .retryElsewhere
                    self.queued.backend = true
                    self.writeShut.backend = false
                    return
                }
            }
            self.end(.abort(.backendError), into: &actions)
        }
    }

    private mutating func setQueued(_ side: Side, _ value: Bool) {
        switch side {
        case .client: self.queued.client = value
        case .backend: self.queued.backend = value
        }
    }

    /// Passes on each EOF whose queue has drained, and closes once both sides are done.
    private mutating func settle(into actions: inout Actions) {
        guard self.phase == .trial || self.phase == .relaying else { return }
        let backendDone = self.inputEnded.client && !self.queued.backend
        let clientDone = self.inputEnded.backend && !self.queued.client
        if backendDone, clientDone {
            self.end(.close(self.reason ?? .clientClosed), into: &actions)
            return
        }
        if backendDone, !self.writeShut.backend {
            self.writeShut.backend = true
            actions.shutdownBackendWrite = true
        }
        if clientDone, !self.writeShut.client {
            self.writeShut.client = true
            actions.shutdownClientWrite = true
        }
    }

    private mutating func record(_ reason: CloseReason) {
        if self.reason == nil { self.reason = reason }
    }

    private mutating func end(_ end: Actions.End, into actions: inout Actions) {
        let reason: CloseReason
        switch (end, self.phase) {
        case (.close(let given), .awaitingProxyHeader), (.close(let given), .connecting),
            (.abort(let given), .awaitingProxyHeader), (.abort(let given), .connecting):
            // Set-up failed: that is the story, whatever the client did meanwhile.
            reason = given
        case (.close(let given), _), (.abort(let given), _):
            // Otherwise the first reason seen wins: a client that sent FIN and then went quiet is
            // "client-closed", not "idle-timeout".
            self.record(given)
            reason = self.reason ?? given
        }
        self.reason = reason
        switch end {
        case .close: actions.end = .close(reason)
        case .abort: actions.end = .abort(reason)
        }
        self.phase = .closed
        self.runningTimer = nil
    }
}
