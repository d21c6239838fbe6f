import Testing

@testable import LBKit

/// The connection's logic without a socket: every edge the relay loop can meet, as events in and
/// actions out.
@Suite("Relay state machine")
struct RelayMachineTests {
    typealias Actions = RelayMachine.Actions

    /// A machine that has picked a backend and is connecting to it.
    func connecting(_ settings: RelayMachine.Settings = .init()) -> RelayMachine {
        var machine = RelayMachine(settings: settings)
        #expect(machine.handle(.accepted) == Actions(start: .pickBackend, timer: .connect))
        #expect(machine.phase == .connecting)
        return machine
    }

    /// A machine relaying to a backend that has answered.
    func relaying() -> RelayMachine {
        var machine = self.connecting()
        _ = machine.handle(.connected(keptBytes: 0))
        _ = machine.handle(.backendAnswered)
        #expect(machine.phase == .relaying)
        return machine
    }

    @Test("a client is connected, put on trial, and kept once the backend answers")
    func happyPath() {
        var machine = self.connecting()
        #expect(machine.mayRead(from: .client))
        #expect(!machine.mayRead(from: .backend))
        #expect(machine.handle(.connected(keptBytes: 12)) == Actions(start: .relay(keepForReplay: true), timer: .idle))
        #expect(machine.phase == .trial)
        #expect(machine.keepsSentBytes)
        // The kept bytes are queued toward the backend until the loop reports them written.
        #expect(!machine.mayRead(from: .client))
        #expect(machine.handle(.drained(.backend)) == .none)
        #expect(machine.mayRead(from: .client))
        #expect(machine.handle(.backendAnswered) == Actions(health: .succeeded, dropKeptBytes: true))
        #expect(machine.phase == .relaying)
        #expect(!machine.keepsSentBytes)
        // Health hears of the success once.
        #expect(machine.handle(.backendAnswered) == .none)
    }

    @Test("with --no-retry-on-reset, on the last attempt, or past the replay limit there is no trial")
    func noTrial() {
        var off = self.connecting(.init(retryOnReset: false))
        #expect(off.handle(.connected(keptBytes: 0)) == Actions(start: .relay(keepForReplay: false), timer: .idle))
        #expect(off.phase == .relaying)

        var last = self.connecting(.init(connectAttempts: 1))
        #expect(last.handle(.connected(keptBytes: 0)) == Actions(start: .relay(keepForReplay: false), timer: .idle))

        var big = self.connecting(.init(maxKeptBytes: 100))
        #expect(big.handle(.connected(keptBytes: 101)) == Actions(start: .relay(keepForReplay: false), timer: .idle))
    }

    @Test("a failed connect is reported and retried elsewhere until the attempts are used up")
    func connectFailures() {
        var machine = self.connecting(.init(connectAttempts: 3))
        #expect(
            machine.handle(.connectFailed(.refused))
                == Actions(start: .retryElsewhere, timer: .connect, health: .connectFailed(.refused))
        )
        #expect(machine.attempts == 2)
        #expect(
            machine.handle(.connectTimedOut)
                == Actions(start: .retryElsewhere, timer: .connect, health: .connectFailed(.timeout))
        )
        #expect(machine.attempts == 3)
        #expect(
            machine.handle(.connectFailed(.reset))
                == Actions(health: .connectFailed(.reset), end: .close(.noBackend))
        )
        #expect(machine.isClosed)
        #expect(machine.handle(.endOfInput(.client)) == .none)
    }

    @Test("no backend to pick closes the client as no-backend, even after its EOF")
    func noBackend() {
        var machine = self.connecting()
        _ = machine.handle(.endOfInput(.client))
        #expect(machine.handle(.noBackendAvailable) == Actions(end: .close(.noBackend)))
    }

    @Test("a reset before the backend's first byte moves the client, with its bytes, to another backend")
    func resetDuringTrial() {
        var machine = self.connecting()
        _ = machine.handle(.connected(keptBytes: 0))
        _ = machine.handle(.endOfInput(.client))
        #expect(
            machine.handle(.failed(.backend, reset: true))
                == Actions(start: .retryElsewhere, timer: .connect, health: .connectFailed(.reset))
        )
        #expect(machine.phase == .connecting)
        // The next backend gets the kept bytes, then the client's EOF once they are written.
        #expect(machine.handle(.connected(keptBytes: 40)) == Actions(start: .relay(keepForReplay: true), timer: .idle))
        #expect(machine.handle(.drained(.backend)) == Actions(shutdownBackendWrite: true))
    }

    @Test("a reset after the backend answered, or with the trial over, aborts both sides")
    func resetAfterAnswer() {
        var answered = self.relaying()
        #expect(answered.handle(.failed(.backend, reset: true)) == Actions(end: .abort(.backendError)))

        // Trial ended by the replay limit: the backend never answered, so health still hears of it.
        var committed = self.connecting()
        _ = committed.handle(.connected(keptBytes: 0))
        #expect(committed.handle(.keptBytes(256 * 1024)) == .none)
        #expect(committed.handle(.keptBytes(256 * 1024 + 1)) == Actions(dropKeptBytes: true))
        #expect(
            committed.handle(.failed(.backend, reset: true))
                == Actions(health: .connectFailed(.reset), end: .abort(.backendError))
        )

        var client = self.relaying()
        #expect(client.handle(.failed(.client, reset: true)) == Actions(end: .abort(.clientError)))
    }

    @Test("only the idle timer restarts on traffic: the PROXY-header and connect deadlines are absolute")
    func timerKinds() {
        var proxied = RelayMachine(settings: .init(waitsForProxyHeader: true))
        #expect(proxied.handle(.accepted) == Actions(start: .awaitProxyHeader, timer: .proxyHeader))
        // A client trickling an unfinished header must not push its deadline back.
        #expect(!proxied.restartsTimerOnTraffic)
        #expect(proxied.handle(.proxyHeaderReceived) == Actions(start: .pickBackend, timer: .connect))
        // Nor may client bytes sent while the backend has not answered the SYN.
        #expect(!proxied.restartsTimerOnTraffic)
        _ = proxied.handle(.connected(keptBytes: 0))
        #expect(proxied.runningTimer == .idle)
        #expect(proxied.restartsTimerOnTraffic)
        _ = proxied.handle(.idleTimedOut(unacknowledged: false))
        #expect(proxied.runningTimer == nil)
        #expect(!proxied.restartsTimerOnTraffic)
    }

    @Test("in panic mode a client may try more backends than --connect-attempts")
    func panicAttempts() {
        var machine = self.connecting(.init(connectAttempts: 1))
        machine.allowAttempts(atLeast: 3)
        #expect(machine.handle(.connectFailed(.refused)).start == .retryElsewhere)
        #expect(machine.handle(.connectFailed(.refused)).start == .retryElsewhere)
        #expect(machine.handle(.connectFailed(.refused)).end == .close(.noBackend))
    }

    @Test("half-close: each EOF becomes a write shutdown of the other side; both ends close the connection")
    func halfClose() {
        var machine = self.relaying()
        #expect(machine.handle(.endOfInput(.client)) == Actions(shutdownBackendWrite: true))
        #expect(!machine.mayRead(from: .client))
        #expect(machine.mayRead(from: .backend))
        // The backend still answers; then its EOF ends the connection (close sends the last FIN).
        #expect(machine.handle(.endOfInput(.backend)) == Actions(end: .close(.clientClosed)))
    }

    @Test("an EOF waits for the bytes queued before it")
    func eofAfterQueuedBytes() {
        var machine = self.relaying()
        _ = machine.handle(.writeBlocked(.client))
        #expect(!machine.mayRead(from: .backend))
        #expect(machine.handle(.endOfInput(.backend)) == .none)
        #expect(machine.handle(.drained(.client)) == Actions(shutdownClientWrite: true))
        #expect(machine.handle(.endOfInput(.client)) == Actions(end: .close(.backendClosed)))
    }

    @Test("a backend that closes before a byte has answered: the client stays and gets the EOF")
    func backendClosesFirst() {
        var machine = self.connecting()
        _ = machine.handle(.connected(keptBytes: 0))
        #expect(machine.handle(.endOfInput(.backend)) == Actions(dropKeptBytes: true, shutdownClientWrite: true))
        #expect(machine.phase == .relaying)
    }

    @Test("back-pressure: a side is not read while bytes wait for its partner")
    func backPressure() {
        var machine = self.relaying()
        _ = machine.handle(.writeBlocked(.backend))
        #expect(!machine.mayRead(from: .client))
        #expect(machine.mayRead(from: .backend))
        _ = machine.handle(.drained(.backend))
        #expect(machine.mayRead(from: .client))
    }

    @Test("PROXY header: awaited first; refused or missing closes the client as proxy-header-invalid")
    func proxyHeader() {
        let settings = RelayMachine.Settings(waitsForProxyHeader: true)
        var machine = RelayMachine(settings: settings)
        #expect(machine.handle(.accepted) == Actions(start: .awaitProxyHeader, timer: .proxyHeader))
        #expect(machine.mayRead(from: .client))
        #expect(machine.handle(.proxyHeaderReceived) == Actions(start: .pickBackend, timer: .connect))

        var refused = RelayMachine(settings: settings)
        _ = refused.handle(.accepted)
        #expect(refused.handle(.proxyHeaderRefused) == Actions(end: .close(.proxyHeaderInvalid)))

        var ended = RelayMachine(settings: settings)
        _ = ended.handle(.accepted)
        #expect(ended.handle(.endOfInput(.client)) == Actions(end: .close(.proxyHeaderInvalid)))
    }

    @Test("timeouts and shutdown close; the first reason seen is the one logged")
    func reasons() {
        var idle = self.relaying()
        #expect(idle.handle(.idleTimedOut(unacknowledged: false)) == Actions(end: .close(.idleTimeout)))

        var halfClosed = self.relaying()
        _ = halfClosed.handle(.endOfInput(.client))
        #expect(halfClosed.handle(.idleTimedOut(unacknowledged: false)) == Actions(end: .close(.clientClosed)))

        var draining = self.relaying()
        #expect(draining.handle(.closeRequested(unacknowledged: false)) == Actions(end: .close(.closedByL4LB)))
    }

    @Test("a connection timed out with bytes stuck toward a side is reset, not closed with a FIN")
    func stuckConnectionsAreReset() {
        var idle = self.relaying()
        _ = idle.handle(.writeBlocked(.backend))
        #expect(idle.handle(.idleTimedOut(unacknowledged: false)) == Actions(end: .abort(.idleTimeout)))

        var draining = self.relaying()
        _ = draining.handle(.writeBlocked(.client))
        #expect(draining.handle(.closeRequested(unacknowledged: false)) == Actions(end: .abort(.closedByL4LB)))

        // Everything written, but the kernel still holds it for a peer that stopped reading.
        var written = self.relaying()
        #expect(written.handle(.idleTimedOut(unacknowledged: true)) == Actions(end: .abort(.idleTimeout)))
        var writtenDraining = self.relaying()
        #expect(writtenDraining.handle(.closeRequested(unacknowledged: true)) == Actions(end: .abort(.closedByL4LB)))
    }

    @Test("out of descriptors is l4lb's own failure: the client is reset, health hears nothing")
    func localResources() {
        var machine = self.connecting()
        #expect(machine.handle(.localResourcesExhausted) == Actions(end: .abort(.localError)))
    }
}
