import Foundation

/// Where integration test bodies run (`withTestResources`): a task executor with threads of its
/// own, so that bodies blocking their thread (a blocking socket read, `poll`) do not stall the
/// tests on Swift's default executor.
///
/// That executor has one cooperative thread per core, two here. Integration tests block on purpose
/// (they act as plain socket clients), so two blocked bodies held up every other test: a probe
/// that slept 50 ms at a time through a full run woke up to 33 s late, and a CI run saw a test stall
/// for over 30 s between two steps, long enough for l4lb's admin idle timeout to close connections
/// the test still counted on.
///
/// The pool is small on purpose. An unbounded one (an overcommitting Dispatch queue) ran every
/// blocking body at once: the run took a third less time, but its burst of child processes and
/// descriptors crashed Foundation's `Process.run` and interrupted blocking reads.
final class BlockingTolerantExecutor: TaskExecutor, @unchecked Sendable {
    static let shared = BlockingTolerantExecutor(threads: 4)

    private let condition = NSCondition()
    /// Guarded by `condition`.
    private var jobs: [UnownedJob] = []

    private init(threads: Int) {
        for index in 0..<threads {
            let thread = Thread { [unowned self] in self.work() }
            thread.name = "l4lb-test-body-\(index)"
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.condition.lock()
        self.jobs.append(job)
        self.condition.signal()
        self.condition.unlock()
    }

    private func work() {
        while true {
            self.condition.lock()
            while self.jobs.isEmpty { self.condition.wait() }
            let job = self.jobs.removeFirst()
            self.condition.unlock()
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
