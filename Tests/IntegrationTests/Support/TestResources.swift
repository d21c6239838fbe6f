import LBKit
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Everything a test started, stopped when the test ends, whether it passed, failed or threw.
final class TestResources: Sendable {
    private let stops = NIOLockedValueBox<[@Sendable () async -> Void]>([])
    let group = MultiThreadedEventLoopGroup.singleton

    func backend(
        _ behavior: TestBackend.Behavior,
        host: String = "127.0.0.1",
        port: Int = 0
    ) async throws -> TestBackend {
        let backend = try await TestBackend.start(behavior, group: self.group, host: host, port: port)
        self.onStop { await backend.stop() }
        return backend
    }

    func greeters(_ names: [String]) async throws -> [TestBackend] {
        var backends: [TestBackend] = []
        for name in names {
            backends.append(try await self.backend(.greet(name)))
        }
        return backends
    }

    func onStop(_ stop: @escaping @Sendable () async -> Void) {
        self.stops.withLockedValue { $0.append(stop) }
    }

    fileprivate func stopAll() async {
        let stops = self.stops.withLockedValue { stops in
            defer { stops = [] }
            return stops
        }
        for stop in stops.reversed() {
            await stop()
        }
    }
}

/// Runs `body` with a fresh `TestResources` and stops all it started afterwards, in reverse order.
func withTestResources(_ body: (TestResources) async throws -> Void) async throws {
    let resources = TestResources()
    // The body may block its thread, and so may stopping what it started (a child process to its
    // end): both run where that does not stall other tests.
    try await withTaskExecutorPreference(BlockingTolerantExecutor.shared) {
        do {
            try await body(resources)
        } catch {
            await resources.stopAll()
            throw error
        }
        await resources.stopAll()
    }
}
