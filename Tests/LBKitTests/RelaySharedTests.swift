import Logging
import NIOConcurrencyHelpers
import NIOEmbedded
import Testing

@testable import LBKit

/// The counters and the pause at `--max-connections` that the relay loops share.
@Suite("Relay loops' shared state")
struct RelaySharedTests {
    /// Records the commands posted to it, as a relay loop would take them.
    final class Recorder: RelayCommandTarget {
        let resumes = NIOLockedValueBox(0)

        func post(_ command: RelayCommand) -> Bool {
            if case .resumeAccepting = command { self.resumes.withLockedValue { $0 += 1 } }
            return true
        }
    }

    func shared(limit: Int) throws -> RelayShared {
        let router = Router(policy: HealthCheckerTests.FirstBackend())
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let health = HealthChecker(
            router: router,
            settings: HealthSettings(),
            loop: EmbeddedEventLoop(),
            instance: "test",
            logger: logger
        )
        return RelayShared(
            router: router,
            health: health,
            logger: logger,
            observers: [],
            configuration: ProxyConfiguration(listen: [], maxConnections: limit)
        )
    }

    @Test("a slot freed between a failed reservation and the pause is not missed: the loop accepts at once")
    func slotFreedWhilePausing() throws {
        let shared = try self.shared(limit: 1)
        let loop = Recorder()
        #expect(shared.reserveSlot())
        #expect(!shared.reserveSlot())
        // Another loop's connection closes before this one registers as paused.
        shared.releaseSlot()
        #expect(shared.loopPaused(loop))
        #expect(!shared.hasPausedLoops)
        #expect(loop.resumes.withLockedValue { $0 } == 0)
    }

    @Test("a paused loop is woken once by the next slot freed, and a second pause registers again")
    func pausedLoopIsWoken() throws {
        let shared = try self.shared(limit: 1)
        let first = Recorder()
        let second = Recorder()
        #expect(shared.reserveSlot())
        #expect(!shared.loopPaused(first))
        #expect(!shared.loopPaused(second))
        #expect(shared.hasPausedLoops)
        shared.releaseSlot()
        #expect(first.resumes.withLockedValue { $0 } == 1)
        #expect(second.resumes.withLockedValue { $0 } == 1)
        #expect(!shared.hasPausedLoops)
        #expect(shared.reserveSlot())
        #expect(!shared.loopPaused(first))
        #expect(shared.hasPausedLoops)
    }
}
