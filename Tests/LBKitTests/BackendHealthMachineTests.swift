import LBKit
import NIOCore
import Testing

/// The health state machine on a fake clock: every time below is computed, none is waited for.
@Suite("Backend health state machine")
struct BackendHealthMachineTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let settings = HealthSettings(retireAfter: 3, rise: 2, fall: 2, jitter: { $0 })

    @Test("a refused connect retires at once and schedules a probe one interval later")
    func refusedRetires() {
        var machine = BackendHealthMachine(settings: self.settings)
        let decision = machine.connectFailed(.refused, at: self.start)
        #expect(decision == .init(transition: .retired, nextProbe: self.start + .seconds(1)))
        #expect(machine.state == .retired)
    }

    @Test("timeouts and resets retire after --retire-after consecutive failures; a success resets the count")
    func timeoutsNeedSeveral() {
        var machine = BackendHealthMachine(settings: self.settings)
        #expect(machine.connectFailed(.timeout, at: self.start) == .nothing)
        #expect(machine.connectFailed(.reset, at: self.start) == .nothing)
        #expect(machine.connectSucceeded(at: self.start) == .nothing)
        #expect(machine.connectFailed(.timeout, at: self.start) == .nothing)
        #expect(machine.connectFailed(.timeout, at: self.start) == .nothing)
        #expect(machine.connectFailed(.timeout, at: self.start).transition == .retired)
    }

    @Test("a backend that stays dead is probed at 1, 2, 4, 8, 16, then every 30 seconds")
    func backoffGrowsToTheCap() {
        var machine = BackendHealthMachine(settings: self.settings)
        var now = self.start
        var next = machine.connectFailed(.refused, at: now).nextProbe!
        var intervals: [Int64] = [(next - now).nanoseconds / 1_000_000_000]
        for _ in 0..<7 {
            now = next
            next = machine.probeFailed(at: now).nextProbe!
            intervals.append((next - now).nanoseconds / 1_000_000_000)
        }
        #expect(intervals == [1, 2, 4, 8, 16, 30, 30, 30])
        #expect(machine.state == .retired)
    }

    @Test("rise successful probes bring it back, at the base interval while climbing")
    func riseRestores() {
        var machine = BackendHealthMachine(settings: self.settings)
        _ = machine.connectFailed(.refused, at: self.start)
        _ = machine.probeFailed(at: self.start + .seconds(1))
        _ = machine.probeFailed(at: self.start + .seconds(3))
        let first = machine.probeSucceeded(at: self.start + .seconds(7))
        #expect(first == .init(transition: nil, nextProbe: self.start + .seconds(8)))
        #expect(machine.state == .probing)
        let second = machine.probeSucceeded(at: self.start + .seconds(8))
        #expect(second.transition == .healthy)
        #expect(second.nextProbe == nil)
        #expect(machine.state == .healthy)
        // Retired again later, the backoff starts over.
        #expect(machine.connectFailed(.refused, at: self.start + .seconds(20)).nextProbe == self.start + .seconds(21))
    }

    @Test("a failed probe while climbing starts the climb over")
    func failureWhileClimbing() {
        var machine = BackendHealthMachine(settings: self.settings)
        _ = machine.connectFailed(.refused, at: self.start)
        _ = machine.probeSucceeded(at: self.start + .seconds(1))
        _ = machine.probeFailed(at: self.start + .seconds(2))
        #expect(machine.state == .retired)
        #expect(machine.probeSucceeded(at: self.start + .seconds(4)).transition == nil)
        #expect(machine.probeSucceeded(at: self.start + .seconds(5)).transition == .healthy)
    }

    @Test("active checks: healthy backends are checked every interval and retired after fall failures")
    func activeChecks() {
        var settings = self.settings
        settings.checkInterval = .seconds(5)
        var machine = BackendHealthMachine(settings: settings)
        #expect(machine.firstCheck(at: self.start) == self.start + .seconds(5))
        #expect(machine.probeSucceeded(at: self.start + .seconds(5)).nextProbe == self.start + .seconds(10))
        #expect(
            machine.probeFailed(at: self.start + .seconds(10))
                == .init(transition: nil, nextProbe: self.start + .seconds(15))
        )
        #expect(
            machine.probeFailed(at: self.start + .seconds(15))
                == .init(transition: .retired, nextProbe: self.start + .seconds(16))
        )
    }

    @Test("a removed backend is never probed again")
    func removal() {
        var machine = BackendHealthMachine(settings: self.settings)
        _ = machine.connectFailed(.refused, at: self.start)
        #expect(machine.remove().transition == .removed)
        #expect(machine.remove() == .nothing)
        #expect(machine.state == .removed)
        #expect(machine.probeFailed(at: self.start + .seconds(1)) == .nothing)
        #expect(machine.probeSucceeded(at: self.start + .seconds(2)) == .nothing)
        #expect(machine.connectFailed(.refused, at: self.start + .seconds(3)) == .nothing)
    }
}
